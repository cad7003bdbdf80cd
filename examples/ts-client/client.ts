/**
 * A small typed client of predstream's HTTP API (`predstream serve`), for Node 18+ or a
 * browser: only `fetch`. The types come from predstream/web/types/predictions.ts, generated
 * from the event contract and the API's OpenAPI document (`python -m predstream.web.typescript`);
 * tests/test_web_typescript.py compiles this file with `tsc --strict` and runs it against a
 * live server. Copy it into your project, or import the types alone.
 *
 *   const client = new PredstreamClient("http://127.0.0.1:8765", process.env.PREDSTREAM_WEB_TOKEN);
 *   const { event_ids } = await client.record([
 *     { job_id: "my-run", epoch: 0.5, step: 100, sample_index: 0, prompt: "2+2=", prediction: "4" },
 *   ]);
 *   const runs = await client.get("/api/v1/runs", {}, { limit: 10 });
 *   const history = await client.get("/api/v1/prompts/{prompt_id}", { prompt_id: "…" });
 */
import type {
  ApiGetResponses,
  ErrorDetail,
  PostPredictionsAccepted,
  PostPredictionsRejected,
  RecordProblem,
  TrainingPrediction,
} from "../../predstream/web/types/predictions.js";

/** The `{name}` parameters of a path such as "/api/v1/prompts/{prompt_id}". */
export type PathParams<P extends string> = P extends `${string}{${infer Name}}${infer Rest}`
  ? { [K in Name]: string } & PathParams<Rest>
  : Record<never, never>;

/** Query parameters of a GET route (limit, cursor, job, ...). */
export type Query = Record<string, string | number | boolean | readonly string[] | undefined>;

/** An answer that is not a success: its status and its JSON body. */
export class PredstreamError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorDetail | PostPredictionsRejected | unknown,
  ) {
    super(`${status}: ${describe(body)}`);
    this.name = "PredstreamError";
  }

  /** The bad records of a refused POST (422): each one's index, field and reason. */
  get problems(): RecordProblem[] {
    return this.status === 422 && isRejected(this.body) ? this.body.errors : [];
  }
}

export class PredstreamClient {
  private readonly baseUrl: string;

  /** `token`: the server's PREDSTREAM_WEB_TOKEN (needed only to record predictions). */
  constructor(baseUrl: string, private readonly token?: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  /**
   * Record predictions (POST /api/v1/predictions). Every record is checked before any is
   * published; one bad record rejects the call (PredstreamError, status 422, `problems`).
   * Resolves with each record's event_id, in order: the consumer stores the rows shortly after.
   */
  async record(records: readonly TrainingPrediction[]): Promise<PostPredictionsAccepted> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.token !== undefined) headers["authorization"] = `Bearer ${this.token}`;
    const response = await fetch(`${this.baseUrl}/api/v1/predictions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ predictions: records }),
    });
    if (response.status !== 202) throw new PredstreamError(response.status, await body(response));
    return (await response.json()) as PostPredictionsAccepted;
  }

  /** GET a JSON route of the API; the path decides the type of the answer. */
  async get<P extends keyof ApiGetResponses>(
    path: P,
    params: PathParams<P>,
    query: Query = {},
  ): Promise<ApiGetResponses[P]> {
    let url: string = path;
    for (const [name, value] of Object.entries(params as Record<string, string>)) {
      url = url.replace(`{${name}}`, encodeURIComponent(value));
    }
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value === undefined) continue;
      for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
    }
    const qs = search.toString();
    const response = await fetch(`${this.baseUrl}${url}${qs ? `?${qs}` : ""}`, {
      headers: { accept: "application/json" },
    });
    if (!response.ok) throw new PredstreamError(response.status, await body(response));
    return (await response.json()) as ApiGetResponses[P];
  }
}

/** The records of the old local persistence API, sent as they are: identity fields optional. */
export function legacyRecord(
  jobId: string,
  step: number,
  sampleIndex: number,
  prompt: string,
  prediction: string,
  groundTruth?: string,
): TrainingPrediction {
  const record: TrainingPrediction = {
    job_id: jobId,
    epoch: 0,
    step,
    sample_index: sampleIndex,
    prompt,
    prediction,
  };
  if (groundTruth !== undefined) record.ground_truth = groundTruth;
  return record;
}

function isRejected(value: unknown): value is PostPredictionsRejected {
  return typeof value === "object" && value !== null && Array.isArray((value as { errors?: unknown }).errors);
}

function describe(value: unknown): string {
  if (typeof value === "object" && value !== null && "detail" in value) {
    const detail = (value as { detail: unknown }).detail;
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }
  return String(value);
}

async function body(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

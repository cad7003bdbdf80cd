// An independent implementation of prompt_id and the sample rank, in JavaScript, written from
// the definitions in schemas/prompt_id_vectors.json and schemas/sample_vectors.json (not from
// the Python code). Reads both files and prints what it computes, as JSON, for the test suite
// to compare with the files' expected values.
//
//   node tests/node/identity_vectors.mjs schemas/prompt_id_vectors.json schemas/sample_vectors.json
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

function canonical(messages) {
  if (messages === null) return "";
  if (!Array.isArray(messages)) throw new Error("wrong-type:messages");
  return JSON.stringify(messages.map((m) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string" || typeof m.content !== "string") {
      throw new Error("wrong-type:messages");
    }
    // Checked on the strings themselves: JSON.stringify would escape a lone surrogate as
    // \udXXX, and that text must not be hashed.
    if (!m.role.isWellFormed() || !m.content.isWellFormed()) throw new Error("invalid-utf8:messages");
    return { content: m.content, role: m.role }; // only these two keys, in sorted order
  }));
}

function hashedText(messages, prompt) {
  if (messages === null && prompt === null) throw new Error("missing-field:prompt");
  if (prompt !== null && typeof prompt !== "string") throw new Error("wrong-type:prompt");
  if (prompt !== null && !prompt.isWellFormed()) throw new Error("invalid-utf8:prompt"); // no UTF-8 form
  return Buffer.from(canonical(messages) + "|" + (prompt ?? ""), "utf8");
}

const promptId = (messages, prompt) => createHash("sha256").update(hashedText(messages, prompt)).digest("hex");
const rank = (seed, id) => createHmac("sha256", Buffer.from(String(seed), "utf8")).update(id, "ascii").digest("hex");

function sample(rows, seed, n) {
  const ranked = rows.map((r, i) => ({ i, r: rank(seed, promptId(r.messages, r.prompt)) }));
  ranked.sort((a, b) => (a.r < b.r ? -1 : a.r > b.r ? 1 : a.i - b.i));
  return ranked.slice(0, n).map((x) => x.i).sort((a, b) => a - b);
}

const [idFile, sampleFile] = process.argv.slice(2);
const ids = JSON.parse(readFileSync(idFile, "utf8"));
const samples = JSON.parse(readFileSync(sampleFile, "utf8"));
const out = {
  vectors: ids.vectors.map((v) => ({
    name: v.name,
    hashed_text_utf8_hex: hashedText(v.messages, v.prompt).toString("hex"),
    prompt_id: promptId(v.messages, v.prompt),
  })),
  refused: ids.refused.map((v) => {
    try {
      return { name: v.name, refused: false, prompt_id: promptId(v.messages, v.prompt) };
    } catch (e) {
      return { name: v.name, refused: true, why: e.message };
    }
  }),
  ranks: samples.ranks.map((v) => ({ seed: v.seed, rank: rank(v.seed, v.prompt_id) })),
  cases: samples.cases.map((c) => ({
    name: c.name,
    prompt_ids: c.rows.map((r) => promptId(r.messages, r.prompt)),
    ranks: c.rows.map((r) => rank(c.seed, promptId(r.messages, r.prompt))),
    sample_source_indices: sample(c.rows, c.seed, c.n),
  })),
};
process.stdout.write(JSON.stringify(out));

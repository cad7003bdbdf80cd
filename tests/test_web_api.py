"""`predstream serve`'s JSON API: a user's runs, stored by the real sink into the real
Postgres, read back over HTTP from the real server (/api/v1), paginated and typed."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from support.web_kit import ALPHA, BETA, HOSTILE, PROMPTS, STEPS, create_story_set, running_server, store, story_events

pytestmark = pytest.mark.integration


@pytest.fixture
def story(database_url):
    store(database_url, story_events())
    create_story_set(database_url)
    with running_server(database_url) as url, httpx.Client(base_url=url + "/api/v1", timeout=10) as client:
        yield client


def _view_accuracy(database_url: str, job: str) -> list[tuple[int, float | None]]:
    """What migrations/0005's view (not our code) says."""
    with psycopg.connect(database_url) as conn:
        return [(s, None if a is None else float(a)) for s, a in conn.execute(
            "SELECT step, accuracy FROM prediction_accuracy_by_step WHERE job_id = %s ORDER BY step", (job,))]


def test_runs_lists_each_run_with_its_accuracy_per_step(story, database_url):
    page = story.get("/runs").json()
    runs = {r["job_id"]: r for r in page["items"]}
    assert set(runs) == {ALPHA, BETA}
    assert page["next_cursor"] is None and page["models"] == ["tiny-gpt2", "tiny-gpt2-wide"]
    alpha = runs[ALPHA]
    assert (alpha["steps"], alpha["prompts"], alpha["first_step"], alpha["last_step"]) == (3, PROMPTS, 10, 30)
    assert alpha["model_name"] == "tiny-gpt2"
    assert alpha["first_evaluation"] < alpha["last_evaluation"]
    for job in (ALPHA, BETA):
        assert [(p["step"], p["accuracy"]) for p in runs[job]["curve"]] == _view_accuracy(database_url, job)
    assert alpha["final_accuracy"] == 1.0
    assert [p["accuracy"] for p in alpha["curve"]] == sorted(p["accuracy"] for p in alpha["curve"])


def test_runs_filter_by_name_and_model_and_page_with_a_cursor(story):
    assert [r["job_id"] for r in story.get("/runs", params={"q": "ALPHA"}).json()["items"]] == [ALPHA]
    assert [r["job_id"] for r in story.get("/runs", params={"model": "tiny-gpt2-wide"}).json()["items"]] == [BETA]
    assert story.get("/runs", params={"q": "100%_"}).json()["items"] == []  # wildcards are literal
    first = story.get("/runs", params={"limit": 1}).json()
    second = story.get("/runs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert first["next_cursor"] and second["next_cursor"] is None
    assert {first["items"][0]["job_id"], second["items"][0]["job_id"]} == {ALPHA, BETA}
    assert story.get("/runs", params={"cursor": "not-a-cursor"}).status_code == 400
    assert story.get("/runs", params={"limit": 0}).status_code == 422


def test_compare_shows_where_the_runs_disagree_with_each_runs_answer(story):
    page = story.get("/disagreements", params={"job": [ALPHA, BETA]}).json()
    assert page["step"] == 30 and page["steps"] == list(STEPS) and page["compared"] == PROMPTS
    by_source = {d["prompt"]["source_index"]: d for d in page["items"]}
    # at step 30 alpha is right everywhere; beta only on prompts 0 and 4
    assert sorted(by_source) == [i for i in range(PROMPTS) if i % 4] == [1, 2, 3, 5, 6, 7]
    assert page["total"] == 6
    assert by_source[5]["answers"][BETA] == {"prediction": HOSTILE, "is_correct": False}
    assert by_source[5]["answers"][ALPHA] == {"prediction": "10", "is_correct": True}
    assert by_source[3]["prompt"]["messages"][1] == {"role": "user", "content": "what is 3 + 3?"}
    # another step, page by page
    step10 = story.get("/disagreements", params={"job": [ALPHA, BETA], "step": 10, "limit": 4}).json()
    rest = story.get("/disagreements", params={"job": [ALPHA, BETA], "step": 10, "limit": 4,
                                               "cursor": step10["next_cursor"]}).json()
    seen = [d["prompt"]["source_index"] for d in step10["items"] + rest["items"]]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == step10["total"]
    assert story.get("/disagreements", params={"job": ["no-such-run"]}).status_code == 404


def test_accuracy_of_several_runs_in_the_order_asked(story, database_url):
    runs = story.get("/accuracy", params={"job": [BETA, ALPHA]}).json()
    assert [r["job_id"] for r in runs] == [BETA, ALPHA]
    assert [(p["step"], p["accuracy"]) for p in runs[0]["points"]] == _view_accuracy(database_url, BETA)


def test_a_prompts_history_marks_where_the_answer_changed(story):
    pid = story.get("/search", params={"q": "2", "by": "source_index"}).json()["items"][0]["prompt_id"]
    history = story.get(f"/prompts/{pid}").json()
    assert history["prompt"]["prompt"] == "what is 2 + 2?" and history["prompt"]["ground_truth"] == "4"
    alpha = next(r for r in history["runs"] if r["job_id"] == ALPHA)
    # alpha learns prompt 2 at step 30 (10 * (1 + 2 % 3))
    assert [(p["step"], p["prediction"], p["changed"]) for p in alpha["points"]] == [
        (10, "40 maybe", False), (20, "40 maybe", False), (30, "4", True)]
    only_beta = story.get(f"/prompts/{pid}", params={"job": BETA}).json()
    assert [r["job_id"] for r in only_beta["runs"]] == [BETA]
    paged = story.get(f"/prompts/{pid}", params={"limit": 1}).json()
    assert len(paged["runs"]) == 1 and paged["next_cursor"]
    assert story.get("/prompts/" + "0" * 64).status_code == 404


def test_search_by_text_prompt_id_and_source_index(story):
    found = story.get("/search", params={"q": "WHAT IS 7"}).json()
    assert found["by"] == "text" and [i["source_index"] for i in found["items"]] == [7]
    chat = story.get("/search", params={"q": "Answer with a number"}).json()
    assert [i["source_index"] for i in chat["items"]] == [3]
    pid = found["items"][0]["prompt_id"]
    by_id = story.get("/search", params={"q": pid[:8]}).json()
    assert by_id["by"] == "prompt_id" and pid in [i["prompt_id"] for i in by_id["items"]]
    assert story.get("/search", params={"q": "7", "by": "source_index"}).json()["items"][0]["prompt_id"] == pid
    assert story.get("/search", params={"q": "x", "by": "source_index"}).status_code == 400
    assert story.get("/search", params={"q": "x", "by": "everything"}).status_code == 422
    assert story.get("/search", params={"q": "%"}).json()["items"] == []


def test_prediction_sets_and_their_items(story):
    sets = story.get("/sets").json()["items"]
    assert [(s["name"], s["item_count"], s["seed"]) for s in sets] == [("sums-first-four", 4, 1)]
    detail = story.get("/sets/sums-first-four", params={"limit": 3}).json()
    more = story.get("/sets/sums-first-four", params={"limit": 3, "cursor": detail["next_cursor"]}).json()
    assert [i["item_index"] for i in detail["items"] + more["items"]] == [0, 1, 2, 3]
    assert story.get(f"/sets/{sets[0]['set_id']}").json()["set"]["name"] == "sums-first-four"
    assert story.get("/sets/nope").json() == {"detail": "no prediction set named 'nope': the sets page lists them all"}


def test_the_openapi_document_types_every_response(story):
    doc = story.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"/api/v1/runs", "/api/v1/accuracy", "/api/v1/disagreements", "/api/v1/prompts/{prompt_id}",
            "/api/v1/search", "/api/v1/sets", "/api/v1/sets/{name}"} <= set(paths)
    for path, ops in paths.items():
        if not path.startswith("/api/v1") or "get" not in ops:
            continue
        schema = ops["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema.get("$ref") or schema.get("items", {}).get("$ref"), path
    run = doc["components"]["schemas"]["RunSummary"]["properties"]
    assert run["final_accuracy"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert doc["components"]["schemas"]["AccuracyPoint"]["properties"]["step"]["type"] == "integer"

"""The web view in a real browser (Chromium): a user looks at runs, picks two to compare, reads
where they disagree, follows a prompt's answers step by step, searches, opens a prediction
set, from the mouse and from the keyboard. The data went in through the real pipeline:
events on a topic, a consumer worker, Postgres. A model that answered with HTML and a script
is shown as text and runs nothing."""

from __future__ import annotations

import re
import uuid

import httpx
import psycopg
import pytest

from support import wait_for
from support.browser import chromium_browser
from support.consumer_kit import count_rows, produce_events, worker_thread
from support.web_kit import ALPHA, BETA, PROMPTS, STEPS, create_story_set, running_server, story_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(stack):
    """The story produced to a topic, consumed by a worker into a fresh database, served."""
    from predstream.consumer import ConsumerSettings
    from predstream.local import create_topics

    name = "w_" + uuid.uuid4().hex[:12]
    with psycopg.connect(stack.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "predstream_template"')
    url, topic = stack.database_url(name), "t." + uuid.uuid4().hex[:12]
    create_topics(stack.bootstrap, {topic: 3, topic + ".dlq": 1})
    events = story_events()
    settings = ConsumerSettings(kafka_bootstrap=stack.bootstrap, topic=topic, database_url=url,
                                group_id="g." + uuid.uuid4().hex[:8], session_timeout_ms=6000, batch_max_wait_ms=50,
                                shutdown_timeout_s=10)
    produce_events(stack.bootstrap, topic, events)
    with worker_thread(settings):
        wait_for(lambda: count_rows(url) == len(events), 60, "every event stored")
    create_story_set(url)
    with running_server(url) as base:
        yield base
    with psycopg.connect(stack.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(base_url=site, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def test_the_runs_page_lists_each_run_with_its_curve_and_filters(page):
    page.goto("/")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 2
    alpha = page.locator("table.runs tbody tr", has_text=ALPHA)
    assert "100.0%" in alpha.inner_text() and "tiny-gpt2" in alpha.inner_text()
    # the sparkline is drawn with one point per step
    points = alpha.locator("svg.spark polyline").get_attribute("points")
    assert points and len(points.split()) == len(STEPS)
    page.get_by_label("Job id contains").fill("beta")
    page.get_by_label("Job id contains").press("Enter")
    page.wait_for_url(re.compile(r"q=beta"))
    assert page.locator("table.runs tbody tr").count() == 1 and BETA in page.locator("table.runs").inner_text()
    page.get_by_label("Model").select_option("tiny-gpt2")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"model=tiny-gpt2"))
    assert "No runs match this filter" in page.inner_text("main")


def test_picking_two_runs_compares_them_on_one_chart_and_lists_their_disagreements(page, site):
    page.goto("/")
    page.get_by_label(f"Select {ALPHA}").check()
    page.get_by_label(f"Select {BETA}").check()
    page.get_by_role("button", name="Compare selected runs").click()
    page.wait_for_url(re.compile(r"/compare\?job="))
    # the chart: one series per run, one point per step, at the accuracy the API gives
    series = page.locator("svg.chart g.series")
    assert series.count() == 2
    api = httpx.get(site + "/api/v1/accuracy", params={"job": [ALPHA, BETA]}).json()
    for run in api:
        drawn = page.locator(f'svg.chart g.series[data-job="{run["job_id"]}"] circle.point')
        assert drawn.count() == len(STEPS)
        assert [float(drawn.nth(i).get_attribute("data-accuracy")) for i in range(len(STEPS))] == [
            p["accuracy"] for p in run["points"]]
    ys = [float(series.nth(0).locator("circle").nth(i).get_attribute("cy")) for i in range(len(STEPS))]
    assert ys[0] > ys[-1], "alpha's curve rises (smaller y is higher)"
    # the prompts where they disagree at the last step, with each run's answer
    assert "6 of 8 prompts" in page.inner_text("main")
    table = page.locator("table.answers")
    assert table.locator("tbody tr").count() == 6
    assert table.locator("thead th").all_inner_texts()[2:] == [ALPHA, BETA]
    # another step: the choice is in the URL (a permalink)
    page.get_by_label("At step").select_option("10")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"step=10"))
    permalink = page.url
    text = page.inner_text("main")
    page.goto(permalink)
    assert page.inner_text("main") == text and "at step 10" in text


def test_a_prompts_page_shows_each_runs_answers_step_by_step_with_what_changed(page):
    page.goto(f"/compare?job={ALPHA}&job={BETA}&step=30")
    page.locator("table.answers a", has_text="what is 2 + 2?").click()
    page.wait_for_url(re.compile(r"/prompts/[0-9a-f]{64}\?job="))
    assert page.locator("pre.prompt").inner_text() == "what is 2 + 2?"
    assert page.locator("pre.reference").inner_text() == "4"
    alpha = page.locator("section.timeline", has=page.get_by_role("heading", name=re.compile(ALPHA)))
    steps = alpha.locator("li")
    assert steps.count() == len(STEPS)
    changed = alpha.locator("li.changed")
    assert changed.count() == 1 and "step 30" in changed.inner_text()
    # the diff: "40 maybe" -> "4"
    assert changed.locator("del").all_inner_texts() == ["40 maybe"]
    assert changed.locator("ins").all_inner_texts() == ["4"]


def test_a_chat_prompt_shows_its_messages(page):
    page.goto("/search?q=Answer+with+a+number")
    page.locator("ul.results a").first.click()
    page.wait_for_url(re.compile(r"/prompts/"))
    messages = page.locator("ol.messages li")
    assert messages.count() == 2
    assert "system" in messages.nth(0).inner_text() and "what is 3 + 3?" in messages.nth(1).inner_text()


def test_a_prediction_with_html_and_a_script_shows_as_text_and_runs_nothing(page):
    page.goto(f"/compare?job={ALPHA}&job={BETA}&step=30")
    cell = page.locator("table.answers tr", has_text="what is 5 + 5?").locator("pre.prediction").nth(1)
    assert cell.inner_text().startswith('<script>window.__pwned = 1; alert("pwned")</script><img src="x"')
    page.locator("table.answers a", has_text="what is 5 + 5?").click()
    page.wait_for_url(re.compile(r"/prompts/"))
    assert "<b id=\"bold\">not bold</b>" in page.inner_text("main")
    for _ in range(2):
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("#bold").count() == 0 and page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0 and page.dialogs == []
        page.goto(f"/compare?job={ALPHA}&job={BETA}&step=30")


def test_everything_is_reachable_from_the_keyboard(page):
    page.goto("/")
    page.keyboard.press("Tab")
    skip = page.evaluate("document.activeElement.textContent")
    assert skip == "Skip to content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused link shows a focus ring"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # tick both runs and compare, keys only
    for job in (ALPHA, BETA):
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.getAttribute('aria-label')") == f"Select {job}":
                break
        page.keyboard.press("Space")
    assert page.get_by_label(f"Select {ALPHA}").is_checked() and page.get_by_label(f"Select {BETA}").is_checked()
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.textContent") == "Compare selected runs":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/compare\?job=.*&job="))
    assert page.locator("svg.chart g.series").count() == 2


def test_search_by_source_index_and_prompt_id_then_open_the_prompt(page):
    page.goto("/search")
    box = page.get_by_label("Find")
    box.fill("7")
    box.press("Enter")
    page.wait_for_url(re.compile(r"q=7"))
    assert "by source_index" in page.inner_text("main")
    page.locator("ul.results a").first.click()
    page.wait_for_url(re.compile(r"/prompts/"))
    prompt_id = page.url.split("/prompts/")[1].split("?")[0]
    page.goto(f"/search?q={prompt_id[:10]}")
    assert "by prompt_id" in page.inner_text("main") and "what is 7 + 7?" in page.inner_text("main")


def test_prediction_sets_list_their_items_linked_to_each_prompt(page):
    page.goto("/")
    page.get_by_role("link", name="Prediction sets").click()
    page.get_by_role("link", name="sums-first-four").click()
    page.wait_for_url(re.compile(r"/sets/sums-first-four"))
    rows = page.locator("main table tbody tr")
    assert rows.count() == 4
    rows.nth(1).locator("a").click()
    page.wait_for_url(re.compile(r"/prompts/"))
    assert page.locator("pre.prompt").inner_text() == "what is 1 + 1?"
    assert page.locator("section.timeline").count() == 2  # both runs answered it
    assert PROMPTS == 8

"""Screenshots of the web view's pages for the README (docs/screenshots/*.png).

    python tools/screenshots.py --admin-url postgresql://postgres@127.0.0.1:5432/postgres

Makes a scratch database (migrated), stores the tests' story of two runs through the real
sink plus a longer third run, serves it on a free port, and shoots each page in Chromium
(/usr/bin/chromium) at 1366x768, a laptop's screen. Without --admin-url it starts an
embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

OUT = ROOT / "docs" / "screenshots"


def _events() -> list:
    from support.events import make_event
    from support.web_kit import story_events

    events = story_events()
    for step in range(10, 310, 10):  # a third run, learning slowly over 30 steps
        for i in range(8):
            right = (i * 37 + step) % 300 < step
            events.append(make_event(i, job="gamma-lr5e-4-long", step=step, model_name="tiny-gpt2",
                                     prediction=str(2 * i) if right else f"{2 * i + 1}"))
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", help="a PostgreSQL role that may create databases")
    args = parser.parse_args()
    import psycopg
    from psycopg.conninfo import make_conninfo

    from predstream.consumer import ConsumerSettings, apply_migrations
    from predstream.web import ServeSettings, start_server
    from support.web_kit import ALPHA, BETA, create_story_set, store

    stack = None
    if not args.admin_url:
        from predstream.local import LocalStack

        stack = LocalStack(Path(tempfile.mkdtemp(prefix="predstream-shots-")), durable=False)
        stack.start_postgres()
        args.admin_url = stack.database_url("postgres")
    name = "shots_" + uuid.uuid4().hex[:8]
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(args.admin_url, dbname=name)
    try:
        apply_migrations(ConsumerSettings(database_url=url))
        store(url, _events())
        create_story_set(url)
        from playwright.sync_api import sync_playwright

        OUT.mkdir(parents=True, exist_ok=True)
        with start_server(ServeSettings(database_url=url, web_port=0)) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT prompt_id FROM prediction_prompts WHERE source_index = 5").fetchone()
            assert row is not None
            shots = {
                "runs": "/",
                "compare": f"/compare?job={ALPHA}&job={BETA}&job=gamma-lr5e-4-long&step=30",
                "prompt": f"/prompts/{row[0]}?job={ALPHA}&job={BETA}",
                "search": "/search?q=what+is+1",
                "set": "/sets/sums-first-four",
            }
            for shot, path in shots.items():
                page.goto(server.url + path, wait_until="load")
                page.screenshot(path=str(OUT / f"{shot}.png"), full_page=False)
                print(f"wrote {OUT / (shot + '.png')}")
            browser.close()
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if stack is not None:
            stack.stop_postgres()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`localstore browse` (issue #14): the store, pulled from the emulator, served read-only
by Datasette with localstore's plugin — checked over HTTP, then in headless Chromium.

One store and one `localstore browse` process serve the whole module. The store holds
a record with a planted phrase and Markdown, an open conflict, a pending change and a
judgement.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstore.api import Client
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import seed_dataset

pytest.importorskip("datasette", reason="the browse extra (Datasette) is not installed")

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-output" / "browse"
CHROMIUM = Path("/usr/bin/chromium")
SECRET = "sk-browse-test-secret-0123456789"
PLANTED = "zanzibar quartz"
MARKDOWN = "Steps:\n1. **open** the box\n2. call us\n\n<script>alert('x')</script>"
BASE_TEXT, OURS_TEXT, THEIRS_TEXT = "original words", "our local words", "their remote words"


@dataclass
class Site:
    url: str
    db: str
    path: Path
    planted: str  # record holding PLANTED and MARKDOWN
    conflicted: str  # record with an open conflict
    pending: str  # record with a pending properties change
    process: subprocess.Popen[str]


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


@pytest.fixture(scope="module")
def site(emulator: Any, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    dataset_id = seed_dataset(emulator.state, 40, name="browse-test")
    ids = [r["id"] for r in emulator.state.list_records(dataset_id)]
    planted, conflicted, pending = ids[5], ids[6], ids[7]
    emulator.state.update_payload(planted, _chat(("system", "Be brief."), ("user", f"Where is my {PLANTED} order?"), ("assistant", MARKDOWN)))
    emulator.state.update_payload(conflicted, _chat(("user", BASE_TEXT)))
    emulator.state.update_properties(planted, {"label": "escalated", "split": "test"})
    path = tmp_path_factory.mktemp("browse") / "store.db"
    with Store.open(path) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])
        edits.set_payload(store, conflicted, _chat(("user", OURS_TEXT)))
        emulator.state.update_payload(conflicted, _chat(("user", THEIRS_TEXT)))
        assert sync(store, client).open_conflicts == 1
        edits.set_properties(store, pending, {"label": "reviewed-locally"})
        with store.transaction() as conn:  # as `localstore judge` stores a verdict
            conn.execute(
                """INSERT INTO judgement_runs (record_id, judge_name, model_name, answer, analysis, judged_at)
                   VALUES (?, 'tone', 'mistral-small', 'polite', 'fine', '2026-01-01T00:00:00Z')""",
                (planted,),
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["MISTRAL_API_KEY"] = SECRET
    log = path.with_name("browse.log")  # a file, not a pipe nobody reads: it could fill up
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "localstore", "--db", str(path), "browse", "--port", "0"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once listening
        match = re.fullmatch(r"serving .* read-only at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)\n", line)
        assert match, (line, log.read_text())
        yield Site(match.group(1), path.stem, path, planted, conflicted, pending, process)
        assert SECRET not in log.read_text()
        assert "Traceback" not in log.read_text()  # user errors (400, 404) are not logged as crashes
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def http(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        yield client


def _conversation(site: Site, rid: str) -> str:
    return f"/-/conversation/{rid}"


# ------------------------------------------------------------------ what is listed


def test_only_the_user_facing_tables_and_views_are_shown(site: Site, http: httpx.Client) -> None:
    data = http.get(f"/{site.db}.json").json()
    shown = {t["name"] for t in data["tables"] if not t["hidden"]}
    assert shown == {"changes", "datasets", "sync_runs"}
    hidden = {t["name"] for t in data["tables"] if t["hidden"]}
    assert {"mirror", "working", "id_map", "judgement_runs", "search_docs", "search_fts",
            "search_fts_data", "search_fts_idx"} <= hidden
    assert {v["name"] for v in data["views"]} == {"records", "messages", "conflicts", "judgements"}
    assert http.get(f"/{site.db}/remote_records").status_code == 403
    assert http.get(f"/{site.db}/search_source").status_code == 403
    page = http.get(f"/{site.db}").text
    for name in ("records", "messages", "changes", "conflicts", "judgements", "datasets", "sync_runs"):
        assert f'href="/{site.db}/{name}"' in page
    for internal in ("mirror", "working", "id_map", "remote_records", "search_docs"):
        assert f'href="/{site.db}/{internal}"' not in page


# ------------------------------------------------------------------ the conversation page


def test_a_conversation_page_shows_properties_then_the_chat(site: Site, http: httpx.Client) -> None:
    response = http.get(_conversation(site, site.planted))
    assert response.status_code == 200
    page = response.text
    assert page.index("Properties") < page.index("Conversation")
    assert "escalated" in page and "<th>split</th><td>test</td>" in page
    roles = re.findall(r'<div class="ls-role">(\w+) <span class="ls-idx">#(\d)</span>', page)
    assert roles == [("system", "0"), ("user", "1"), ("assistant", "2")]
    assert f"Where is my {PLANTED} order?" in page
    assert "<strong>open</strong>" in page and "<ol>" in page  # Markdown
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # raw HTML stays text
    assert "polite" in page  # the judgement
    assert http.get(_conversation(site, "00000000-0000-4000-8000-000000000000")).status_code == 404


def test_pending_and_conflicted_records_say_so_on_their_page(site: Site, http: httpx.Client) -> None:
    page = http.get(_conversation(site, site.conflicted)).text
    assert "ls-state-conflict" in page and "Conflict on /payload" in page and OURS_TEXT in page
    page = http.get(_conversation(site, site.pending)).text
    assert "ls-state-pending" in page and "reviewed-locally" in page and "<td>properties</td>" in page


@pytest.mark.parametrize(
    "page",
    ["{db}/records", "{db}/messages?record_id={rid}", "{db}/changes", "{db}/judgements",
     "{db}/conflicts", "{db}/pending_changes", "{db}/search?q=zanzibar", "{db}/records_by_label?label=escalated"],
)
def test_every_record_id_links_to_its_conversation(site: Site, http: httpx.Client, page: str) -> None:
    response = http.get("/" + page.format(db=site.db, rid=site.planted))
    assert response.status_code == 200
    links = set(re.findall(r'href="/-/conversation/([0-9a-f-]{36})"', response.text))
    assert links and (site.planted in links or site.conflicted in links or site.pending in links)
    for rid in links:
        assert f">{rid}</a>" in response.text


# ------------------------------------------------------------------ canned queries and facets


def test_search_query_highlights_the_planted_phrase(site: Site, http: httpx.Client) -> None:
    page = http.get(f"/{site.db}/search", params={"q": '"zanzibar quartz"'}).text
    assert f'href="/-/conversation/{site.planted}"' in page
    assert "<mark>zanzibar quartz</mark>" in page
    rows = http.get(f"/{site.db}/search.json", params={"q": "zanzibar", "_shape": "array"}).json()
    assert [(r["record_id"], r["role"]) for r in rows] == [(site.planted, "user")]
    assert http.get(f"/{site.db}/search").status_code == 200  # no query yet: an empty result


def test_open_conflicts_show_base_ours_and_theirs_side_by_side(site: Site, http: httpx.Client) -> None:
    rows = http.get(f"/{site.db}/open_conflicts.json", params={"_shape": "array"}).json()
    (row,) = rows
    assert row["record_id"] == site.conflicted
    assert list(row)[:5] == ["record_id", "parts", "base", "ours", "theirs"]
    texts = [json.loads(row[side])["payload"]["messages"][0]["content"] for side in ("base", "ours", "theirs")]
    assert texts == [BASE_TEXT, OURS_TEXT, THEIRS_TEXT]
    page = http.get(f"/{site.db}/open_conflicts").text
    assert page.count('<pre class="ls-snapshot">') == 3


def test_the_other_canned_queries(site: Site, http: httpx.Client) -> None:
    pending = http.get(f"/{site.db}/pending_changes.json", params={"_shape": "array"}).json()
    assert {(r["record_id"], r["kind"]) for r in pending} >= {(site.pending, "properties")}
    labelled = http.get(f"/{site.db}/records_by_label.json", params={"label": "escalated", "_shape": "array"}).json()
    assert site.planted in {r["record_id"] for r in labelled}
    assert all(r["label"] == "escalated" for r in labelled)
    answers = http.get(f"/{site.db}/judge_answers_by_label.json", params={"_shape": "array"}).json()
    assert answers == [{"judge_name": "tone", "label": "escalated", "answer": "polite", "records": 1}]


def test_facets_on_sync_state_role_and_property_keys(site: Site, http: httpx.Client) -> None:
    data = http.get(f"/{site.db}/records.json").json()
    facets = data["facet_results"]
    assert {"sync_state", "properties.label", "properties.split", "properties.lang"} <= set(facets)
    states = {r["value"]: r["count"] for r in facets["sync_state"]["results"]}
    assert states["conflict"] == 1 and states["pending"] == 1
    label = {r["value"]: r for r in facets["properties.label"]["results"]}
    escalated = label["escalated"]
    filtered = http.get(escalated["toggle_url"]).json()
    assert filtered["filtered_table_rows_count"] == escalated["count"]
    assert {json.loads(r[7])["label"] for r in filtered["rows"]} == {"escalated"}
    roles = http.get(f"/{site.db}/messages.json").json()["facet_results"]["role"]["results"]
    assert {r["value"] for r in roles} >= {"system", "user", "assistant"}


# ------------------------------------------------------------------ read-only, local, no key


def test_it_refuses_writes_and_never_locks_the_store(site: Site, http: httpx.Client) -> None:
    before = subprocess.run(
        [sys.executable, "-m", "localstore", "--db", str(site.path), "sql", "select count(*) from mirror"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    response = http.get(f"/{site.db}", params={"sql": "delete from mirror"})
    assert response.status_code == 400 and "Statement must be a SELECT" in response.text
    for page in (f"/{site.db}/records", f"/{site.db}/search", f"/{site.db}", "/"):
        response = http.post(page, data={"sql": "delete from mirror"})
        assert (response.status_code, response.text) == (405, "localstore browse is read-only\n")
    # while it serves, localstore still writes the store, and the next page load shows it
    done = subprocess.run(
        [sys.executable, "-m", "localstore", "--db", str(site.path), "set", site.planted, "note=written while browsing"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "written while browsing" in http.get(_conversation(site, site.planted)).text
    after = subprocess.run(
        [sys.executable, "-m", "localstore", "--db", str(site.path), "sql", "select count(*) from mirror"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert before == after


def test_it_listens_on_loopback_and_never_shows_the_api_key(site: Site, http: httpx.Client) -> None:
    assert site.url.startswith("http://127.0.0.1:")
    pages = ["/", f"/{site.db}", f"/{site.db}/records", f"/{site.db}/datasets", f"/{site.db}/sync_runs",
             _conversation(site, site.planted), "/-/metadata.json", "/-/versions.json", "/-/plugins.json",
             "/-/settings.json", "/-/databases.json", "/-/threads.json", "/-/actor.json", "/-/messages",
             f"/{site.db}.json", f"/{site.db}?sql=select+*+from+pragma_compile_options"]
    for page in pages:
        response = http.get(page)
        assert SECRET not in response.text, page


def test_without_datasette_browse_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['datasette'] = None  # as if the browse extra were not installed\n"
        "from localstore.cli import main\n"
        f"main(['--db', {str(tmp_path / 's.db')!r}, 'browse'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == "localstore: error: localstore browse needs Datasette: pip install 'localstore[browse]'\n"


def test_status_does_not_import_datasette(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from localstore.cli import main\n"
        "try:\n"
        f"    main(['--db', {str(tmp_path / 's.db')!r}, 'status'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('datasette', 'markdown_it')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ in a real browser


def _launch_chromium() -> Any:
    """Playwright driving Debian's Chromium; skipped, with the reason, only where that
    cannot run (.ci/run installs the chromium package)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (it is in the dev extra)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it) to run the browser test")
    return sync_playwright()


@pytest.mark.slow
def test_in_headless_chromium(site: Site) -> None:
    manager = _launch_chromium()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with manager as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            # the records table lists the records
            page.goto(f"{site.url}{site.db}/records")
            page.wait_for_selector("table.rows-and-columns")
            ids = page.locator("table.rows-and-columns td.col-id a").all_inner_texts()
            assert len(ids) == 40 and site.planted in ids
            assert page.locator("text=40 rows").count() == 1
            page.screenshot(path=str(SCREENSHOTS / "records.png"), full_page=True)

            # a click on an id opens its conversation: roles and contents
            page.click(f"a[href='/-/conversation/{site.planted}'] >> nth=0")
            page.wait_for_selector("section.ls-chat")
            assert page.url.endswith(f"/-/conversation/{site.planted}")
            roles = [r.split()[0] for r in page.locator(".ls-message .ls-role").all_inner_texts()]
            assert roles == ["system", "user", "assistant"]
            contents = page.locator(".ls-message .ls-content").all_inner_texts()
            assert contents[0] == "Be brief."
            assert PLANTED in contents[1]
            assert page.locator(".ls-role-assistant strong").inner_text() == "open"
            assert page.locator(".ls-role-assistant li").count() == 2
            page.screenshot(path=str(SCREENSHOTS / "conversation.png"), full_page=True)

            # the search query finds the planted phrase, through its form
            page.goto(f"{site.url}{site.db}/search")
            page.fill("input[name=q]", '"zanzibar quartz"')
            page.click("input[type=submit], button[type=submit] >> nth=0")
            page.wait_for_selector("mark")
            assert page.locator("mark").first.inner_text() == PLANTED
            assert page.locator(f"a[href='/-/conversation/{site.planted}']").count() == 1
            page.screenshot(path=str(SCREENSHOTS / "search.png"), full_page=True)

            # the conflicts query shows the three versions of the planted conflict
            page.goto(f"{site.url}{site.db}/open_conflicts")
            page.wait_for_selector("pre.ls-snapshot")
            snapshots = page.locator("pre.ls-snapshot").all_inner_texts()
            assert len(snapshots) == 3
            for text, snapshot in zip((BASE_TEXT, OURS_TEXT, THEIRS_TEXT), snapshots, strict=True):
                assert text in snapshot
            headers = page.locator("table.rows-and-columns th").all_inner_texts()
            assert [h.strip() for h in headers][2:5] == ["base", "ours", "theirs"]
            page.screenshot(path=str(SCREENSHOTS / "conflicts.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in SCREENSHOTS.glob("*.png")) >= ["conflicts.png", "conversation.png", "records.png", "search.png"]


def test_screenshots_folder_is_not_tracked() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "test-output/browse/x.png"],
                             capture_output=True, text=True)
    assert ignored.returncode == 0

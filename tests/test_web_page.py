"""The web leaderboard in a real headless browser: tables and figures render, sorting works, no console errors.

Chromium comes from the system packages (`apt-get install -y chromium`, as .ci/run does); Playwright drives it.
"""

import shutil
from pathlib import Path

import pytest

from harness.results.publishing.site import publish
from harness.results.records import write_record
from tests.test_leaderboard import record

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system chromium: apt-get install -y chromium")


CLAIM = """[[claim]]
id = "a-above-b"
paper = "P"
where = "Table 1"
statement = "A scores above B."
family = "f"
min_encoders = 3
[claim.test]
kind = "paired"
tasks = ["t1", "t2"]
row = "a"
versus = ["b"]
"""


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    """Three tasks, so the table gets its critical-difference figure, plus the papers' columns."""
    root = tmp_path_factory.mktemp("site")
    scores = {"a": (0.91, 0.92, 0.90), "b": (0.80, 0.83, 0.81), "c": (0.70, 0.72, 0.69)}
    for task, shift in (("t1", 0.0), ("t2", -0.05), ("t3", 0.02)):
        for method, accs in scores.items():
            for seed, acc in enumerate(accs):
                server = {"mlflow_server": "http://mlflow.example:5000"} if method == "a" else {}
                write_record(root, record(task, method, seed, acc + shift, mlflow_run_id=f"{task}-{method}-{seed}",
                                          environment={"hardware": "cpu"} | server))
    shutil.copytree(REFERENCE, root / "reference")
    (root / "claims.toml").write_text(CLAIM)
    assert publish(root) == [] and publish(root, check=True) == []
    return root / "index.html"


@pytest.fixture(scope="module")
def browser_page(page_file):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright, __import__("tempfile").TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        yield page, errors, requests
        context.close()


def column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent)")


def test_the_page_renders_its_tables_and_figures_without_errors_or_network(browser_page):
    page, errors, requests = browser_page
    assert page.title() == "Leaderboard"
    assert page.locator("#table-s tbody tr").count() == 3 and page.locator("#protocol tbody tr").count() == 9
    assert page.locator("h2", has_text="multibench").count() == 1  # the papers' table, with no run of ours
    images = page.locator("figure img")
    assert images.count() >= 2
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 100 for w in widths), widths  # every SVG decoded and drawn
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []  # nothing fetched
    assert page.locator("#claims-table tbody tr").count() == 1  # the claims section, one row per claim
    assert "supported" in page.locator("#claims-table tbody tr").first.text_content()
    assert errors == []


def test_clicking_a_header_sorts_by_its_numbers_both_ways(browser_page):
    page, errors, _ = browser_page
    header = page.locator("#table-s th", has_text="t2")
    header.click()
    ascending = [float(cell.split()[0]) for cell in column(page, "table-s", 2)]
    assert ascending == sorted(ascending) and column(page, "table-s", 0)[0] == "C"
    header.click()
    descending = [float(cell.split()[0]) for cell in column(page, "table-s", 2)]
    assert descending == sorted(descending, reverse=True) and column(page, "table-s", 0)[0] == "A"
    page.locator("#table-s th", has_text="method").click()
    assert column(page, "table-s", 0) == ["A", "B", "C"]
    assert errors == []


def test_a_rows_name_opens_its_hyperparameters_per_seed_scores_and_mlflow_runs(browser_page):
    page, errors, requests = browser_page
    assert page.locator("p", has_text="from the records in site").count() == 1  # the folder it was built from
    details = page.locator("details#row-s--A")
    assert not details.evaluate("d => d.open")
    page.locator("#table-s a", has_text="A").first.click()
    assert details.evaluate("d => d.open") and details.locator("table.seeds").first.is_visible()
    assert "lr=0.001" in details.inner_text()
    seeds = details.locator("table.seeds").first.locator("tbody tr").all_inner_texts()
    assert [line.split("\t")[:2] for line in seeds] == [["0", "91.00"], ["1", "92.00"], ["2", "90.00"]]  # t1's
    link = details.locator("a", has_text="t1-a-0")
    assert link.get_attribute("href") == "http://mlflow.example:5000/#/runs/t1-a-0"
    other = page.locator("details#row-s--B")
    # No server recorded for B: its run ids are text, never a link (the block is closed: its text content).
    assert other.locator("a", has_text="t1-b-0").count() == 0 and "t1-b-0" in other.text_content()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [] and errors == []

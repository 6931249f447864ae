"""The live campaign page and the HTML report, in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium; nothing is downloaded at test time).

What the page shows is read from the browser's own bokeh document (every model of the page is
named ``"<panel>.<name>"``), so the figures compared are those the browser received. Screenshots
go to ``test-artifacts/`` (or $CAMPAIGN_TEST_ARTIFACTS).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster

from campaign.launch import launch
from campaign.spec import load_spec
from scripts.headless_chromium import open_chromium
from storage import CampaignStore
from storage.ledger import LedgerEntry, LedgerFollower, failures, latest_status, ledger_block, plan_block, stage_summary
from tasks.active.select import HISTOGRAM_EDGES_EV_PER_A
from tests.conftest import small_crs, write_spec
from tests.test_active_learning import al_spec

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "campaign.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ARTIFACTS = Path(os.environ.get("CAMPAIGN_TEST_ARTIFACTS", ROOT / "test-artifacts"))

# every named model the page shows: a ColumnDataSource's data, or a Div's text
SHOWN_JS = """
const out = {};
for (const doc of Bokeh.documents) {
  for (const m of doc.all_models) {
    if (!m.name || !m.name.includes('.')) continue;
    if (m.data !== undefined) {
      const d = {};
      for (const [k, v] of (m.data instanceof Map ? m.data.entries() : Object.entries(m.data))) d[k] = Array.from(v);
      out[m.name] = d;
    } else if (m.text !== undefined) {
      out[m.name] = {text: m.text, tags: Array.from(m.tags || [])};
    }
  }
}
return out;
"""


@pytest.fixture(scope="module")
def browser():
    driver = open_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver) -> dict:
    return driver.execute_script(SHOWN_JS)


def console_problems(driver) -> list[dict]:
    """Errors and warnings the page wrote to the browser's console since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def read_at(driver) -> float:
    """When the data the page shows was read from the store (0 before the first read)."""
    tags = shown(driver).get("page.status", {}).get("tags", [])
    return float(tags[0]) if tags else 0.0


def status_json(store_dir: Path) -> dict:
    done = subprocess.run([*CLI, "status", str(store_dir), "--json"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def page_stages(page: dict) -> dict[str, dict[str, int]]:
    s = page["stages.stages"]
    return {stage: {"done": d, "failed": f, "pending": p}
            for stage, d, f, p in zip(s["stage"], s["done"], s["failed"], s["pending"])}


def url_from(proc: subprocess.Popen, prefix: str, log: Path) -> tuple[str, list[str]]:
    lines = []
    while not any(line.startswith(prefix) for line in lines):
        line = proc.stdout.readline()
        assert line, f"ended before printing {prefix!r}: {log.read_text()[-3000:]}"
        lines.append(line)
    return lines[-1].split()[2], lines


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


# -- without a browser ---------------------------------------------------------------------------

def test_dashboard_of_a_folder_that_is_no_store_is_refused(tmp_path):
    done = subprocess.run([*CLI, "dashboard", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=ENV)
    assert done.returncode == 2 and "is not a campaign store" in done.stderr, done.stderr


def test_the_page_follows_the_ledger_row_by_row_to_what_status_reads_whole(tmp_path):
    """Plans and attempts arrive in random order and sizes (retries, keys planned after their
    attempt, failures that later succeed); after each commit the follower that read only the new
    rows says what stage_summary and failures say from every row."""
    rng = np.random.default_rng(7)
    follower = LedgerFollower()
    keys = [f"k{i}" for i in range(300)]
    unplanned = list(keys)
    with CampaignStore.open_for_writing(tmp_path / "s", "t") as store:
        for step in range(40):
            blocks = {}
            if unplanned and rng.random() < 0.6:
                new = [unplanned.pop() for _ in range(min(len(unplanned), int(rng.integers(1, 30))))]
                blocks["plan"] = plan_block(new, [f"stage{int(k[1:]) % 3}" for k in new])
            tried = rng.choice(keys, size=int(rng.integers(0, 25)))
            blocks["ledger"] = ledger_block([LedgerEntry(str(k), f"stage{int(k[1:]) % 3}",
                                                         "done" if rng.random() < 0.7 else "failed", 0.1,
                                                         error=f"e{step}", finished_unix=time.time()) for k in tried])
            store.append(blocks)
            follower.update(store)
            assert follower.summary() == stage_summary(store)
            assert follower.failed_rows() == sorted(latest_status(store)[f["key"]][1] for f in failures(store))
    assert sum(c["done"] for c in follower.summary().values()) > 50


def test_pages_join_the_dask_dashboard_only_for_their_cluster(tmp_path):
    from distributed.dashboard.scheduler import applications

    from schedulers.dashboard import dashboard_pages

    def hello(scheduler, extra, doc):
        from bokeh.models import Div

        doc.add_root(Div(text="hello"))

    with dashboard_pages({"/hello": hello}):
        cluster = LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0", scheduler_port=0)
    try:
        assert "/hello" not in applications, "taken out again once the cluster's dashboard is built"
        port = cluster.scheduler.http_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=20) as response:
            assert response.status == 200 and b"bokeh" in response.read().lower()
    finally:
        cluster.close()
    with LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0", scheduler_port=0) as other:
        port = other.scheduler.http_server.port
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=20)


# -- in the browser ------------------------------------------------------------------------------

@pytest.mark.slow
def test_page_during_a_labeling_campaign_shows_what_campaign_status_says(tmp_path, browser):
    labeler = {"kind": "ase", "calculator_class": "tests.slow_labeler:SometimesSlowTBLite",
               "parameters": {"delay_s": 4.0, "every": 2, "fail_every": 5}}
    spec = write_spec(tmp_path, structures=[small_crs(count=36, seed=4)], labeler=labeler,
                      scheduler={"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}})
    store_dir, log = tmp_path / "store", tmp_path / "launch.log"
    proc = subprocess.Popen([*CLI, "launch", str(spec), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True, cwd=ROOT, env=ENV)
    try:
        url, lines = url_from(proc, "Campaign page:", log)
        dashboard = next(line.split()[1] for line in lines if line.startswith("Dashboard:"))
        assert url.startswith("http://127.0.0.1:") and url.rsplit("/", 1)[0] == dashboard.rsplit("/", 1)[0], \
            "the page is served by Dask's dashboard, at its address and port"
        browser.get(url)
        wait_for(lambda: read_at(browser) > 0, 60, "the page's first read of the store")
        compared, mid_run, problems = [], None, []
        while proc.poll() is None and len(compared) < 4:
            before = status_json(store_dir)
            asked = time.time()
            wait_for(lambda: read_at(browser) > asked or proc.poll() is not None, 30, "a refresh of the page")
            if proc.poll() is not None:
                break  # the launch (and its dashboard) ended before the page refreshed
            page = page_stages(shown(browser))
            after = status_json(store_dir)
            # the page read the store between the two status calls: each count lies between theirs
            for stage, counts in page.items():
                for kind in ("done", "failed"):
                    assert before["stages"][stage][kind] <= counts[kind] <= after["stages"][stage][kind], \
                        (stage, kind, before["stages"][stage], counts, after["stages"][stage])
                assert sum(counts.values()) == sum(before["stages"][stage].values())
            compared.append(page["label"])
            logged = console_problems(browser)
            if proc.poll() is None:  # once the launch has ended, its page losing its server is expected
                problems += logged
            if mid_run is None and page["label"]["pending"] and page["label"]["done"]:
                mid_run = screenshot(browser, "campaign_page_running.png")
        browser.get("about:blank")  # leave before the launch closes its dashboard (the page would log that)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "items failed" in out, log.read_text()[-3000:]  # the deliberate failures
    assert any(c["pending"] for c in compared), f"no comparison while items were pending: {compared}"
    assert len(compared) >= 2 and mid_run is not None, compared
    assert not problems, problems
    assert status_json(store_dir)["stages"]["label"]["failed"] > 0


@pytest.fixture(scope="module")
def al_store(tmp_path_factory, client) -> Path:
    directory = tmp_path_factory.mktemp("al-page")
    spec = load_spec(al_spec(directory))
    launch(spec, client=client, progress=False, say=lambda _: None)
    return Path(spec.store)


@pytest.mark.slow
def test_dashboard_of_a_finished_active_learning_store(al_store, browser, tmp_path):
    log = tmp_path / "dashboard.log"
    proc = subprocess.Popen([*CLI, "dashboard", str(al_store), "--refresh-s", "1"], stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True, cwd=ROOT, env=ENV)
    try:
        url, _ = url_from(proc, "Campaign page:", log)
        assert url.startswith("http://localhost:")
        console_problems(browser)  # drop what earlier pages logged (a launch's page whose cluster closed)
        browser.get(url)
        page = wait_for(lambda: (lambda p: p if "al-deviation.histogram" in p else None)(shown(browser)), 90,
                        "the active-learning panels")
        status = status_json(al_store)
        assert page_stages(page) == status["stages"]
        iterations = page["al-iterations.iterations"]
        with CampaignStore.open(al_store) as store:
            stored = store.read("al_iterations")
            explored = store.read("al_explored", ["iteration", "deviation_eV_per_A"])
        assert iterations["iteration"] == stored["iteration"].tolist()
        for name in ("accurate", "candidate", "failed"):
            np.testing.assert_allclose(iterations[name], stored[f"{name}_fraction"])
        last = explored["iteration"] == explored["iteration"].max()
        # the histogram, counted here with a loop over the frames
        counts = [0] * (len(HISTOGRAM_EDGES_EV_PER_A) - 1)
        for d in explored["deviation_eV_per_A"][last]:
            counts[next(k for k in range(len(counts)) if d < HISTOGRAM_EDGES_EV_PER_A[k + 1])] += 1
        assert page["al-deviation.histogram"]["frames"] == counts and sum(counts) == int(last.sum())
        screenshot(browser, "campaign_dashboard_active_learning.png")
        problems = console_problems(browser)
        assert not problems, problems
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_report_of_an_active_learning_store_opens_from_disk_with_every_plot(al_store, browser, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([*CLI, "report", str(al_store), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=ENV)
    assert done.returncode == 0, done.stderr
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert len(pngs) == 4
    console_problems(browser)  # drop what earlier pages logged (a launch's page whose cluster closed)
    browser.get((out / "index.html").as_uri())
    images = wait_for(lambda: browser.execute_script(
        "return document.readyState === 'complete' ? Array.from(document.images).map("
        "i => [i.alt, i.complete && i.naturalWidth > 0]) : null"), 30, "the report to load")
    assert sorted(alt for alt, _ in images) == pngs
    assert all(loaded for _, loaded in images), images
    text = browser.find_element("tag name", "body").text
    assert "al-initial" in text and "active_learning" in text
    screenshot(browser, "campaign_report_active_learning.png")
    problems = console_problems(browser)
    assert not problems, problems

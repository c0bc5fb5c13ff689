"""The Dagster UI, driven by headless Chromium: every asset listed, a two-shard backfill, metadata.

Starts `dagster dev` (webserver + daemon) on 127.0.0.1 with the repo's dagster.yaml in a temp
DAGSTER_HOME, and a tiny model; drives Debian's /usr/bin/chromium with Playwright (it never
downloads a browser; .ci/setup.d/10-chromium.sh installs chromium). Screenshots go to a temp
folder that the test prints; with UPDATE_SCREENSHOTS=1 two of them are also written, small, to
docs/screenshots/ for the README.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from attn_assets_tests.ui.dagster_server import REPO, DagsterDev

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("ATTN_ASSETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
MAX_DOC_PNG_BYTES = 300_000
LOCATION = "attn_assets.definitions"
PROGRESS_LINE = re.compile(r"(shard-\d+): (\d+) / (\d+) images \(([\d.]+) images/s\)")

BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 20) { runId status } }
    ... on PythonError { message }
  }
}"""
PARTITION_STATS = """
{ assetNodes(assetKeys: [{path: ["attention_statistics"]}]) {
    partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
RUN_LOGS = """
query($id: ID!) {
  logsForRun(runId: $id) { ... on EventConnection { events { __typename ... on MessageEvent { message } } } }
}"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _wait_for_run(server: DagsterDev, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = server.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in FINISHED:
            return status
        time.sleep(2)
    raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s:\n{server.log_tail()}")


def _run_messages(server: DagsterDev, run_id: str) -> list[str]:
    events = server.graphql(RUN_LOGS, {"id": run_id})["logsForRun"]["events"]
    return [e["message"] for e in events if e.get("message")]


def _small_png(source: Path, target: Path, max_width: int = 1200) -> int:
    """A palette PNG at most max_width wide (screenshots are flat UI colours: 128 colours suffice)."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target.stat().st_size


def _materialize_manifest() -> list[str]:
    """image_manifest, in-process, so the shards (dynamic partitions) exist before the UI starts."""
    import dagster as dg

    from attn_assets.definitions import build_definitions
    from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME

    with dg.DagsterInstance.get() as instance:
        result = build_definitions().resolve_job_def("manifest_job").execute_in_process(
            instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        )
        assert result.success
        return sorted(instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))


@pytest.fixture
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (run .ci/setup.d/10-chromium.sh)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_ui_lists_assets_runs_a_backfill_and_shows_metadata(pipeline_env, tmp_path, chromium):
    from attn_assets.definitions import defs

    shutil.copy(REPO / "dagster.yaml", pipeline_env.dagster_home / "dagster.yaml")
    shards = _materialize_manifest()
    assert len(shards) >= 3
    backfilled = shards[:2]
    asset_names = sorted(node.key.to_user_string() for node in defs.resolve_all_asset_specs())
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")

    server = DagsterDev(pipeline_env.dagster_home, tmp_path / "dagster_dev.log").start()
    try:
        started = time.monotonic()
        server.wait_ready(asset_count=len(asset_names))
        print(f"dagster dev ready in {time.monotonic() - started:.1f} s on {server.url}")

        # 1. every asset of the project is listed in the catalog
        page = chromium.new_page(viewport={"width": 1400, "height": 400 + 72 * len(asset_names)})
        page.set_default_timeout(60_000)
        page.goto(f"{server.url}/assets")
        page.get_by_text(asset_names[0], exact=True).first.wait_for()
        page.wait_for_timeout(1000)
        listed = set(page.inner_text("body").split("\n"))
        assert not set(asset_names) - listed, f"assets missing from /assets: {sorted(set(asset_names) - listed)}"
        page.screenshot(path=str(shots / "assets_list.png"))

        # the lineage graph, every group expanded
        page.set_viewport_size({"width": 1600, "height": 1100})
        page.goto(f"{server.url}/asset-groups")
        page.get_by_text("Global asset lineage").first.wait_for()
        page.get_by_text("statistics", exact=True).first.wait_for()
        page.mouse.click(1200, 300, button="right")
        page.locator("[role=menu]").get_by_text("Expand all groups").click()
        page.get_by_text("image_manifest", exact=True).first.wait_for()
        jump = page.get_by_placeholder("Jump to…").bounding_box()  # the tree sidebar's hide button is beside it
        page.mouse.click(jump["x"] + jump["width"] + 22, jump["y"] + jump["height"] / 2)
        page.mouse.move(1000, 550)
        page.keyboard.down("Control")  # ctrl + wheel zooms the graph out, to show every group
        for _ in range(3):
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(200)
        page.keyboard.up("Control")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "asset_graph.png"))

        # 2. a backfill of two shards (GraphQL: the same mutation the UI's Materialize dialog sends)
        launched = server.graphql(BACKFILL, {"params": {
            "assetSelection": [{"path": ["attention_statistics"]}], "partitionNames": backfilled,
            "title": "browser test",
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        deadline = time.monotonic() + 300
        backfill = None
        while time.monotonic() < deadline:
            backfill = server.graphql(BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED",) and all(r["status"] in FINISHED for r in backfill["runs"]):
                break
            time.sleep(3)
        assert backfill and backfill["status"] == "COMPLETED_SUCCESS", f"{backfill}\n{server.log_tail()}"
        assert backfill["runs"] and {r["status"] for r in backfill["runs"]} == {"SUCCESS"}
        stats = server.graphql(PARTITION_STATS)["assetNodes"][0]["partitionStats"]
        assert stats == {"numMaterialized": 2, "numPartitions": len(shards), "numFailed": 0, "numMaterializing": 0}
        print(f"backfill of {backfilled} done in {time.monotonic() - started:.1f} s")

        # progress lines "<shard>: done / total images (x images/s)" reach the Dagster log
        messages = [m for run in backfill["runs"] for m in _run_messages(server, run["runId"])]
        progress = [PROGRESS_LINE.search(m) for m in messages]
        finished_shards = {m.group(1) for m in progress if m and m.group(2) == m.group(3)}
        assert finished_shards == set(backfilled), messages

        # 3. the asset page: partitions materialized, metadata visible
        page.set_viewport_size({"width": 1400, "height": 1300})
        page.goto(f"{server.url}/assets/attention_statistics?view=partitions")
        page.get_by_text("Materialized (2)").first.wait_for()
        page.get_by_text(f"Missing ({len(shards) - 2})").first.wait_for()
        page.screenshot(path=str(shots / "attention_statistics_partitions.png"))
        page.goto(f"{server.url}/assets/attention_statistics")
        page.get_by_text("images_per_second", exact=True).first.wait_for()
        page.get_by_text("per_shard", exact=True).first.wait_for()
        for shard in backfilled:  # rows of the per_shard table (markdown, rendered a moment later)
            page.locator("td", has_text=shard).first.wait_for()
        assert "Latest materialization" in page.inner_text("body")
        page.screenshot(path=str(shots / "attention_statistics.png"))

        # a figure: the warehouse and one plot downstream of the two shards
        run = server.graphql(LAUNCH_RUN, {"params": {"selector": {
            "repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["attention_warehouse"]}, {"path": ["attention_distributions"]}],
        }}})["launchRun"]
        assert run["__typename"] == "LaunchRunSuccess", run
        assert _wait_for_run(server, run["run"]["runId"], timeout_s=300) == "SUCCESS", server.log_tail()
        page.goto(f"{server.url}/assets/attention_distributions")
        page.get_by_text("[Show Markdown]").first.click()
        dialog = page.locator("[role=dialog]").last
        dialog.locator("img").first.wait_for()
        page.wait_for_timeout(500)
        dialog.screenshot(path=str(shots / "figure_attention_distributions.png"))
        page.close()
        print(f"UI checks done in {time.monotonic() - started:.1f} s")
    finally:
        leftovers = server.stop()
    assert not leftovers, f"processes left after stopping dagster dev: {leftovers}"
    assert server.seen, "no process of dagster dev was ever seen"

    for name in ("asset_graph.png", "assets_list.png", "attention_statistics.png",
                 "attention_statistics_partitions.png", "figure_attention_distributions.png"):
        assert (shots / name).stat().st_size > 10_000, name
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("asset_graph.png", "attention_statistics.png"):
            size = _small_png(shots / name, DOCS_SCREENSHOTS / name)
            assert size < MAX_DOC_PNG_BYTES, f"{name}: {size} bytes"
            print(f"updated {DOCS_SCREENSHOTS / name} ({size // 1000} KB)")

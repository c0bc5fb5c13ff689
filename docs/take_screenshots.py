"""Redo the README's lineage screenshots: docs/screenshots/asset_graph.png and asset_groups.png.

Usage (from the repository root, with Debian's chromium installed by .ci/setup.d/10-chromium.sh)::

    .venv/bin/python docs/take_screenshots.py [--work DIR] [--out docs/screenshots]

Writes the demo (12 images) to DIR (default: a new temp folder; a DIR/home already materialized
is reused), materializes it with the demo model
(``attn-assets materialize``, ATTN_ASSETS_NUM_WORKERS=0) in DIR/home, starts ``dagster dev`` on
that DAGSTER_HOME (attn_assets_tests/ui/dagster_server.py) and drives headless Chromium with
Playwright, as attn_assets_tests/ui/test_browser.py does:

* asset_graph.png: the lineage filtered to the main path (image_manifest, shard_image_sets,
  attention_statistics, attention_warehouse, country_aggregates, country_figures), groups
  expanded, at a size whose text stays legible at the README's ~1000 px width;
* asset_groups.png: the global lineage with every group collapsed, showing every group.

Both are saved as 128-colour palette PNGs (flat UI colours), at most 1200 px wide.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attn_assets_tests.ui.dagster_server import DagsterDev  # noqa: E402

CHROMIUM = Path(os.environ.get("ATTN_ASSETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAIN_PATH = ["image_manifest", "shard_image_sets", "attention_statistics", "attention_warehouse",
             "country_aggregates", "country_figures"]
MAX_WIDTH = 1200
SCALE = 1.2  # device pixels per CSS pixel: a 1000 px wide page is saved 1200 px wide


def materialize_demo(work: Path) -> Path:
    """Demo images and manifest in work/demo, materialized into work/home; returns the DAGSTER_HOME."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "ATTN_ASSETS_NUM_WORKERS": "0", "ATTN_ASSETS_MODEL": "demo"}
    env.pop("DAGSTER_HOME", None)
    subprocess.run([str(bin_dir / "attn-assets"), "demo-data", "--images", "12", "--out", str(work / "demo")],
                   check=True, env=env, cwd=REPO)
    subprocess.run([str(bin_dir / "attn-assets"), "materialize", "--home", str(work / "home"),
                    "--manifest", str(work / "demo" / "test.csv")], check=True, env=env, cwd=REPO)
    return work / "home" / "dagster_home"


def small_png(source: Path, target: Path, max_width: int = MAX_WIDTH) -> tuple[int, int, int]:
    """source as a 128-colour palette PNG at most max_width wide; returns (width, height, bytes)."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)),
                                 Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        return image.width, image.height, target.stat().st_size


def hide_panels(page) -> None:
    """Collapse the left navigation and the asset tree sidebar (beside the "Jump to…" box), so the graph gets the width."""
    page.get_by_text("Hide navigation").click()
    page.wait_for_timeout(300)
    jump = page.get_by_placeholder("Jump to…")
    if jump.count() and jump.first.is_visible():
        box = jump.first.bounding_box()
        page.mouse.click(box["x"] + box["width"] + 22, box["y"] + box["height"] / 2)
    page.wait_for_timeout(800)


def graph_menu(page, item: str) -> None:
    """Choose item in the graph's settings menu (the gear): "Expand all groups", "Collapse all groups", orientation."""
    page.locator("[aria-label='settings']").locator("xpath=..").last.click()
    menu = page.locator("[role=menu]")
    menu.first.wait_for()
    entry = menu.get_by_text(item)
    if entry.count():
        entry.first.click()
    page.keyboard.press("Escape")  # the menu stays open after a click; unchosen, the graph is already so
    page.wait_for_timeout(1500)


def nodes_box(page) -> dict:
    """The union of the graph's node boxes (SVG foreignObjects), in CSS pixels: x0, y0, x1, y1."""
    return page.evaluate("""() => {
        const r = Array.from(document.querySelectorAll('svg foreignObject')).map(e => e.getBoundingClientRect())
            .filter(b => b.width > 0);
        return {x0: Math.min(...r.map(b => b.left)), y0: Math.min(...r.map(b => b.top)),
                x1: Math.max(...r.map(b => b.right)), y1: Math.max(...r.map(b => b.bottom))};
    }""")


def fill_area(page, area: dict, fill: float = 0.92) -> None:
    """Zoom (ctrl + wheel, ~1.1-1.2x a step, about the nodes' centre) until one more step would overflow area
    (x0, y0, x1, y1, CSS pixels) at `fill`, then drag the background so the nodes are centred in area."""
    width, height = area["x1"] - area["x0"], area["y1"] - area["y0"]
    for _ in range(12):
        box = nodes_box(page)
        w, h = box["x1"] - box["x0"], box["y1"] - box["y0"]
        if w * 1.2 > width * fill or h * 1.2 > height * fill:
            break
        page.mouse.move((box["x0"] + box["x1"]) / 2, (box["y0"] + box["y1"]) / 2)
        page.keyboard.down("Control")
        page.mouse.wheel(0, -100)
        page.keyboard.up("Control")
        page.wait_for_timeout(400)
    box = nodes_box(page)
    dx = (area["x0"] + area["x1"]) / 2 - (box["x0"] + box["x1"]) / 2
    dy = (area["y0"] + area["y1"]) / 2 - (box["y0"] + box["y1"]) / 2
    start_x, start_y = area["x0"] + 8, area["y0"] + 8  # background: the nodes are centred away from the corner
    if dx < 0:
        start_x = area["x1"] - 60
    if dy < 0:
        start_y = area["y1"] - 8
    page.mouse.move(start_x, start_y)
    page.mouse.down()
    page.mouse.move(start_x + dx, start_y + dy, steps=10)
    page.mouse.up()
    page.wait_for_timeout(800)


def graph_area(page) -> dict:
    """The graph's viewport below the filter bar, left of the zoom controls, in CSS pixels."""
    bar = page.locator("textarea[aria-label='Search and filter assets']").locator("xpath=../../..").bounding_box()
    size = page.viewport_size
    return {"x0": 70, "y0": bar["y"] + bar["height"] + 16, "x1": size["width"] - 60, "y1": size["height"] - 10}


def open_lineage(browser, url: str, viewport: dict):
    page = browser.new_page(viewport=viewport, device_scale_factor=SCALE)
    page.set_default_timeout(60_000)
    page.goto(f"{url}/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()
    page.get_by_text("statistics", exact=True).first.wait_for()
    hide_panels(page)
    return page


def shoot(url: str, out: Path, raw: Path) -> None:
    from playwright.sync_api import sync_playwright

    selection = " or ".join(f'key:"{name}"' for name in MAIN_PATH)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            # 1. the main path (filtered), groups expanded, zoomed to fill the view
            page = open_lineage(browser, url, {"width": 1000, "height": 500})
            page.locator("textarea[aria-label='Search and filter assets']").focus()
            page.keyboard.type(selection)
            page.keyboard.press("Enter")
            page.wait_for_timeout(2500)
            graph_menu(page, "Expand all groups")
            page.get_by_text("country_figures", exact=True).first.wait_for()
            page.wait_for_timeout(4000)  # asset statuses load after the layout
            fill_area(page, graph_area(page))
            page.mouse.move(5, 5)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(raw / "asset_graph.png"))
            print("asset_graph.png", small_png(raw / "asset_graph.png", out / "asset_graph.png"))

            # 2. every group, collapsed
            page = open_lineage(browser, url, {"width": 1000, "height": 500})
            graph_menu(page, "Collapse all groups")
            page.wait_for_timeout(4000)
            fill_area(page, graph_area(page))
            page.mouse.move(5, 5)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(raw / "asset_groups.png"))
            print("asset_groups.png", small_png(raw / "asset_groups.png", out / "asset_groups.png"))
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the demo, its home and the raw shots (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="where the PNGs go")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not installed: run .ci/setup.d/10-chromium.sh", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="attn_screenshots_"))
    work.mkdir(parents=True, exist_ok=True)
    dagster_home = work / "home" / "dagster_home"
    if not (dagster_home / "dagster.yaml").exists():
        dagster_home = materialize_demo(work)
    raw = work / "raw"
    raw.mkdir(exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from attn_assets.definitions import defs

    asset_count = len(list(defs.resolve_all_asset_specs()))
    server = DagsterDev(dagster_home, work / "dagster_dev.log",
                        env={"ATTN_ASSETS_HOME": str(work / "home"), "ATTN_ASSETS_MODEL": "demo",
                             "ATTN_ASSETS_MANIFEST": str(work / "demo" / "test.csv"),
                             "ATTN_ASSETS_NUM_WORKERS": "0"}).start()
    try:
        server.wait_ready(asset_count=asset_count)
        shoot(server.url, args.out, raw)
    finally:
        left = server.stop()
        if left:
            print(f"still running after stop: {left}", file=sys.stderr)
    print(f"raw shots in {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

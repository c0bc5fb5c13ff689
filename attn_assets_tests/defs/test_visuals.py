"""Every figure asset, rendered from the end-to-end data: files, sizes, non-blank pixels, metadata."""

import numpy as np
import pytest
from PIL import Image

from attn_assets.orchestration import materialize_all
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.warehouse import Warehouse

pytestmark = pytest.mark.slow


def _assert_not_blank(path, min_bytes=5_000):
    assert path.stat().st_size > min_bytes, path
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10, f"{path} looks blank"
    assert (pixels < 250).mean() > 0.05, f"{path} is almost all white"


def _latest_metadata(instance, key):
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_figures_are_drawn_from_the_warehouse(pipeline_env, instance):
    assert materialize_all(instance=instance).ok
    layout = HomeLayout(pipeline_env.home)
    figures = [
        layout.analysis_dir / "attention_distributions.png",
        layout.analysis_dir / "overall_statistics.png",
        layout.visualizations_dir / "diverse_examples_grid.png",
        layout.visualizations_dir / "country_boxplots.png",
        layout.visualizations_dir / "country_mean_maps.png",
    ]
    for folder in ("high_concentration", "low_concentration", "high_entropy", "low_entropy"):
        pngs = sorted((layout.visualizations_dir / folder).glob("*.png"))
        assert len(pngs) == 3
        figures += pngs
        index = (layout.visualizations_dir / folder / "index.csv").read_text()
        assert index.startswith("rank,image_id,country")
    for path in figures:
        _assert_not_blank(path)
    assert not list(layout.analysis_dir.rglob(".*tmp*")), "temporary files left behind"

    # the distributions figure drew the warehouse's means; the UI gets an inline preview
    store = Warehouse(layout.warehouse_path)
    means = store.query("SELECT avg(attention_entropy) AS e, avg(attention_concentration_top10) AS c, "
                        "avg(num_high_attention_patches) AS h, avg(attention_spread) AS s FROM attention_statistics").iloc[0]
    metadata = _latest_metadata(instance, "attention_distributions")
    assert metadata["attention_entropy_mean"] == pytest.approx(means.e, abs=1e-9)
    assert metadata["attention_concentration_top10_mean"] == pytest.approx(means.c, abs=1e-9)
    assert metadata["num_high_attention_patches_mean"] == pytest.approx(means.h, abs=1e-9)
    assert metadata["attention_spread_mean"] == pytest.approx(means.s, abs=1e-12)
    assert metadata["preview"].startswith("![") and "data:image/png;base64," in metadata["preview"]
    assert "| Attention Entropy" in _latest_metadata(instance, "overall_statistics")["table"]

    # an image deleted after its statistics were computed is skipped with a warning, not a failure
    top = store.query("SELECT image_id FROM attention_statistics ORDER BY attention_entropy DESC, image_id LIMIT 1").image_id[0]
    pipeline_env.image_path(top).unlink()
    from attn_assets.definitions import build_definitions

    result = build_definitions().resolve_job_def("downstream_job").execute_in_process(instance=instance)
    assert result.success
    assert _latest_metadata(instance, "gallery_high_entropy")["skipped"] == 1
    gallery = sorted((layout.visualizations_dir / "high_entropy").glob("*.png"))
    assert len(gallery) == 2 and all(top not in p.name for p in gallery)
    logs = instance.all_logs(result.run_id)
    assert any(f"image {top} is gone" in (entry.user_message or "") for entry in logs)

"""The trained demo model looks at the planted cue, and the checks that say so fail on broken map geometry.

On the demo set (write_demo_data, seed 0: never used in training), the rollout map and the last-layer head-averaged
CLS map of the `demo` model are scored against each sign_only image's cue box. Every check is also run on the same maps broken the
ways real bugs break them (transposed, mirrored left-right, placed on the whole photo instead of the model's crop),
and must fail there: on uniform maps of an untrained model all of these would pass or fail alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attn_assets.catalog.demo_data import write_demo_data
from attn_assets.core.extract import AttentionExtractor
from attn_assets.core.loader import ImageRecord, iter_batches
from attn_assets.core.localization import cue_geometry, localization_scores, parse_box
from attn_assets.core.model import DEMO_MODEL_DIR, load_encoder, randomized_encoder
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.rollout import RolloutExtractor
from attn_assets.crop_geometry import CropGeometry
from attn_assets.figures.triptych import prepare_view

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="models/demo is not in this checkout"),
]

DEMO_IMAGES = 144  # 72 sign_only images
# Pointing-game rates measured with the committed weights on these 72 images (fp32, 2 threads), and the bars the
# tests use: about 7-8 images (0.10) below the measured rate, and above every broken map's measured rate.
#   rollout: 0.708 (51/72); broken: transposed 0.167, mirrored 0.111, on the whole photo 0.472 (34/72)
#   last layer, head mean: 0.403 (29/72); broken: 0.097, 0.056, 0.236 (17/72)
#   gallery triptych's hottest pixel (last layer): 0.333 (24/72); broken: 0.042, 0.028, 0.125 (9/72)
# Chance (a uniform map's pointing rate, the share of cells the sign touches) is about 0.05.
BARS = {"rollout": 0.60, "last_layer": 0.30, "triptych": 0.22}


@pytest.fixture(scope="module")
def demo_maps(tmp_path_factory):
    """(rows with image id, variant, size, box; last-layer head-mean maps [n, gh, gw]; encoder) for the demo set."""
    manifest = write_demo_data(tmp_path_factory.mktemp("demo"), n_images=DEMO_IMAGES)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["scene_variant"] == "sign_only"].reset_index(drop=True)
    root = manifest.parent
    records = [ImageRecord(i, str(next(root.glob(f"images/*/*/{i}.jpg")))) for i in frame["id"]]
    encoder = load_encoder("demo", "cpu")
    extractor = AttentionExtractor(encoder, device="cpu", precision="fp32")
    rollout = RolloutExtractor(encoder, device="cpu", precision="fp32")
    preprocess = Preprocessor(encoder.processor)
    maps, rollout_maps, sizes = [], [], []
    for batch in iter_batches(records, preprocess, batch_size=8, num_workers=0):
        assert not batch.failures
        maps.append(extractor(batch.pixel_values).last_layer_map().numpy())
        rollout_maps.append(rollout(batch.pixel_values)[0].numpy())
        sizes.extend(batch.image_sizes)
    grid = encoder.grid_size
    frame["size"] = sizes
    frame["path"] = [r.path for r in records]
    frame["box"] = [parse_box(t) for t in frame["cue_box"]]
    return frame, {"last_layer": np.concatenate(maps).reshape(-1, *grid),
                   "rollout": np.concatenate(rollout_maps).reshape(-1, *grid)}, encoder


def _pointing_rate(frame, maps, encoder, *, geometry_of=None) -> float:
    preprocess = Preprocessor(encoder.processor)
    hits = []
    for (width, height), box, grid_map in zip(frame["size"], frame["box"], maps):
        geometry = geometry_of(width, height) if geometry_of else preprocess.crop_geometry(width, height)
        cue = cue_geometry(box, geometry, encoder.grid_size)
        assert cue.in_crop, "sign_only cues always lie in the crop"
        hits.append(localization_scores(grid_map.reshape(1, -1), cue.coverage)["pointing_hit"][0])
    return float(np.mean(hits))


def _whole_photo(width: int, height: int, size: int = 224) -> CropGeometry:
    """The geometry of a map wrongly stretched over the whole photo (no centre crop)."""
    return CropGeometry(size / width, size / height, size, size, 0, 0, size, size)


@pytest.mark.parametrize("kind", ["rollout", "last_layer"])
def test_map_points_at_the_cue_and_broken_geometry_does_not(demo_maps, kind):
    frame, all_maps, encoder = demo_maps
    maps = all_maps[kind]
    rate = _pointing_rate(frame, maps, encoder)
    print(f"pointing game, {kind}, {len(frame)} sign_only images: {rate:.3f}")
    assert rate >= BARS[kind]
    transposed = _pointing_rate(frame, np.swapaxes(maps, 1, 2), encoder)
    mirrored = _pointing_rate(frame, maps[:, :, ::-1], encoder)
    uncropped = _pointing_rate(frame, maps, encoder, geometry_of=_whole_photo)
    print(f"transposed {transposed:.3f}, mirrored {mirrored:.3f}, on the whole photo {uncropped:.3f}")
    for broken in (transposed, mirrored, uncropped):
        assert broken < BARS[kind]


def _energy_ratio(frame, maps, encoder) -> float:
    preprocess = Preprocessor(encoder.processor)
    ratios = [localization_scores(m.reshape(1, -1), cue_geometry(box, preprocess.crop_geometry(w, h),
                                                                   encoder.grid_size).coverage)["energy_ratio"][0]
              for (w, h), box, m in zip(frame["size"], frame["box"], maps)]
    return float(np.mean(ratios))


def test_randomized_weights_put_no_more_mass_on_the_cue_than_uniform(demo_maps):
    """Adebayo et al.'s model randomization: the trained model's last-layer map holds 4.48x the uniform share of its
    mass on the sign (measured), the randomized copy's 1.03x (seed 1; 1.00-1.03 for seeds 0-3). The pointing game
    cannot tell them apart: a near-uniform map's arg-max is noise that lands on the high-contrast sign 7-42% of the
    time depending on the seed (measured), so the energy ratio is the check here."""
    frame, all_maps, encoder = demo_maps
    trained = _energy_ratio(frame, all_maps["last_layer"], encoder)
    random_model = randomized_encoder(encoder)
    extractor = AttentionExtractor(random_model, device="cpu", precision="fp32")
    preprocess = Preprocessor(encoder.processor)
    records = [ImageRecord(i, p) for i, p in zip(frame["id"], frame["path"])]
    maps = np.concatenate([extractor(b.pixel_values).last_layer_map().numpy()
                           for b in iter_batches(records, preprocess, batch_size=8, num_workers=0)])
    randomized = _energy_ratio(frame, maps.reshape(-1, *encoder.grid_size), encoder)
    print(f"energy in box / box area share: trained {trained:.2f}, randomized {randomized:.2f}")
    assert trained > 3.0
    assert randomized < 1.5


def _hottest_pixel_in_box(image_path, grid_map, crop_box, cue_box) -> bool:
    """Whether the triptych overlay's hottest pixel, mapped back to original pixels, lies in ``cue_box``."""
    display, dbox, crop, heat = prepare_view(image_path, grid_map, crop_box)
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    # the overlay panel shows crop_region(display, dbox): its pixel (col, row) is display pixel
    # (round(dbox.left) + col, round(dbox.top) + row); display -> original divides by the display scale
    from PIL import Image

    with Image.open(image_path) as im:
        width, height = im.size
    sx, sy = display.size[0] / width, display.size[1] / height
    x = (round(dbox[0]) + col + 0.5) / sx
    y = (round(dbox[1]) + row + 0.5) / sy
    x0, y0, x1, y1 = cue_box
    return x0 <= x <= x1 and y0 <= y <= y1


def test_triptych_overlay_is_hottest_on_the_cue(demo_maps):
    frame, all_maps, encoder = demo_maps
    maps = all_maps["last_layer"]
    preprocess = Preprocessor(encoder.processor)
    boxes = [preprocess.crop_geometry(w, h).box_in_original() for w, h in frame["size"]]

    def rate(grid_maps, crop_boxes) -> float:
        return float(np.mean([_hottest_pixel_in_box(p, m, c, b) for p, m, c, b in
                              zip(frame["path"], grid_maps, crop_boxes, frame["box"])]))

    right = rate(maps, boxes)
    print(f"triptych hottest pixel in the cue box: {right:.3f}")
    assert right >= BARS["triptych"]
    whole = [(0.0, 0.0, float(w), float(h)) for w, h in frame["size"]]
    for broken in (rate(np.swapaxes(maps, 1, 2), boxes), rate(maps[:, :, ::-1], boxes), rate(maps, whole)):
        assert broken < BARS["triptych"]

import numpy as np
import pytest
from PIL import Image

from attn_assets.crop_geometry import model_view_box
from attn_assets.crop_geometry import resized_shape as resized_size
from attn_assets.figures.geometry import load_display_image, normalize_map, upsample_map


def test_model_view_box_osv_photo():
    # 792x512, shortest edge 336 -> 519x336 (int truncation), crop left (519-336)//2 = 91
    assert resized_size(792, 512, 336) == (519, 336)
    box = model_view_box(792, 512, 336, 336)
    assert box == pytest.approx((91 * 792 / 519, 0.0, 427 * 792 / 519, 512.0))
    assert box == pytest.approx((140.6, 0.0, 651.4, 512.0), abs=2.5)  # the brief's approximation
    # about 35% of the width is cut away
    assert 1 - (box[2] - box[0]) / 792 == pytest.approx(0.355, abs=0.01)


@pytest.mark.parametrize("w,h", [(512, 512), (336, 336), (1000, 1000)])
def test_model_view_box_square_is_whole_image(w, h):
    assert model_view_box(w, h) == pytest.approx((0, 0, w, h))


def test_model_view_box_portrait_and_padding():
    l, t, r, b = model_view_box(512, 792, 336, 336)
    assert (l, r) == pytest.approx((0, 512))
    assert (t, b) == pytest.approx((91 * 792 / 519, 427 * 792 / 519))
    # crop larger than the resized image (processor pads): box extends outside the image
    l, t, r, b = model_view_box(400, 200, 224, 336)
    assert l == pytest.approx(50.0) and t == pytest.approx(-50.0) and b == pytest.approx(250.0)


def test_model_view_box_matches_transformers_processor():
    """The box agrees with what CLIPImageProcessor (PIL backend) actually crops."""
    clip = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    proc = clip.CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                      do_normalize=False, do_rescale=False)
    for w, h in [(792, 512), (1000, 300), (640, 480), (512, 900)]:
        xs = np.linspace(0.0, 255.0, w)
        ys = np.linspace(0.0, 255.0, h)
        arr = np.zeros((h, w, 3), np.uint8)
        arr[..., 0] = np.round(xs)[None, :]
        arr[..., 1] = np.round(ys)[:, None]
        out = proc(images=Image.fromarray(arr), return_tensors="np")["pixel_values"][0]
        l, t, r, b = model_view_box(w, h, 336, 336)
        # centre of the first / last output pixel, mapped back to original pixel coordinates
        sx, sy = (r - l) / 336, (b - t) / 336
        for col, want_x in [(0, l + 0.5 * sx - 0.5), (335, r - 0.5 * sx - 0.5)]:
            assert out[0, 168, col] == pytest.approx(255.0 * want_x / (w - 1), abs=2.0), (w, h, col)
        for row, want_y in [(0, t + 0.5 * sy - 0.5), (335, b - 0.5 * sy - 0.5)]:
            assert out[1, row, 168] == pytest.approx(255.0 * want_y / (h - 1), abs=2.0), (w, h, row)


def test_normalize_uniform_and_nonfinite():
    z = normalize_map(np.full((24, 24), 0.3, np.float32))
    assert z.shape == (24, 24) and not np.isnan(z).any() and (z == 0).all()
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    m[0, 1] = np.nan
    n = normalize_map(m)
    assert np.isfinite(n).all() and n.max() == 1.0 and n.min() == 0.0
    assert normalize_map(np.full(576, np.nan)).shape == (24, 24)  # flat square row reshaped


def test_upsample_shape_and_range():
    up = upsample_map(np.random.default_rng(0).random((24, 24)), 512, 511)
    assert up.shape == (512, 511) and up.min() >= 0 and up.max() <= 1


def test_load_display_image_downscales_and_keeps_size(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(p)
    img, orig = load_display_image(p, max_side=1024)
    assert orig == (4000, 3000) and max(img.size) <= 1024 and img.mode == "RGB"
    assert img.size[0] / img.size[1] == pytest.approx(4 / 3, rel=0.01)
    with pytest.raises(OSError):
        load_display_image(tmp_path / "gone.jpg")

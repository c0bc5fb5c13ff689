import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from attn_assets.figures import render_triptych
from attn_assets.figures.triptych import prepare_view

from .conftest import assert_not_blank, gradient_image


def test_triptych_renders(tmp_path):
    out = render_triptych(gradient_image(792, 512), np.random.default_rng(1).random((24, 24)), None, "title",
                          tmp_path / "sub" / "t.png")
    arr = assert_not_blank(out)
    assert arr.shape[:2] == (500, 1500)  # figsize (15, 5) at 100 dpi, like the seed
    assert [p.name for p in out.parent.iterdir()] == ["t.png"]  # no temp file left


def test_triptych_uniform_map_and_path_input(tmp_path):
    p = tmp_path / "photo.png"
    gradient_image(300, 200).save(p)
    out = render_triptych(p, np.ones((24, 24), np.float32), (0, 0, 200, 200), None, tmp_path / "u.png")
    assert_not_blank(out)


def test_triptych_needs_out_path():
    with pytest.raises(TypeError):
        render_triptych(gradient_image(10, 10), np.ones((2, 2)))


def _rows_in_panel(arr, x0, x1):
    panel = arr[:, x0:x1].astype(int)
    nonwhite = panel.sum(axis=-1) < 700
    counts = nonwhite.sum(axis=1)
    rows = np.where(counts > 0.5 * counts.max())[0]
    cols = np.where(nonwhite[rows].sum(axis=0) > 0.5 * len(rows))[0]
    gaps = np.where(np.diff(cols) > 1)[0]
    if gaps.size:  # the panel's colour bar stands right of it, past a white gap
        cols = cols[: gaps[0] + 1]
    return panel, rows, cols


def test_heatmap_is_placed_on_the_crop_region(tmp_path):
    """A hot patch in the map's top-left corner lands in the top-left of the CROP, which is square."""
    img = Image.new("RGB", (800, 400), (0, 0, 0))
    m = np.zeros((24, 24), np.float32)
    m[0, 0] = 1.0
    view = prepare_view(img, m, None)
    display, dbox, crop, heat = view
    assert dbox == pytest.approx((200.0, 0.0, 600.0, 400.0))  # 800x400 -> 672x336 -> crop at 168
    assert crop.size == (400, 400) and heat.shape == (400, 400)
    assert heat[:4, :4].min() > 0.6 and heat[20:, :].max() == 0 and heat[:, 20:].max() == 0

    out = render_triptych(img, m, None, None, tmp_path / "hot.png")
    with Image.open(out) as im:
        arr = np.asarray(im.convert("RGB"))
    # overlay panel: the right third of the figure
    panel, rows, cols = _rows_in_panel(arr, 1000, 1500)
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert abs(h - w) <= 0.05 * w, (h, w)  # square crop, not the 2:1 frame stretched
    sq = panel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    hot = sq[..., 0] > 60
    ys, xs = np.nonzero(hot)
    assert len(ys) > 20
    assert ys.max() < 0.1 * h and xs.max() < 0.1 * w, (ys.max() / h, xs.max() / w)

    # original panel: the crop outline's vertical edges sit at 25% and 75% of the photo's width
    panel, rows, cols = _rows_in_panel(arr, 0, 500)
    photo = panel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    cyan = (photo[..., 0] < 100) & (photo[..., 1] > 150) & (photo[..., 2] > 150)
    colfrac = cyan.sum(axis=0) / photo.shape[0]
    edge_cols = np.nonzero(colfrac > 0.3)[0] / photo.shape[1]
    assert len(edge_cols) > 0
    assert np.any(np.abs(edge_cols - 0.25) < 0.02) and np.any(np.abs(edge_cols - 0.75) < 0.02), edge_cols


def test_explicit_crop_box_is_used():
    img = Image.new("RGB", (800, 400))
    _, dbox, crop, heat = prepare_view(img, np.ones((4, 4)), (0, 0, 400, 400))
    assert dbox == pytest.approx((0, 0, 400, 400)) and crop.size == (400, 400)


def test_large_photo_is_downscaled_before_display(tmp_path):
    img = gradient_image(4000, 3000)
    display, dbox, crop, heat = prepare_view(img, np.ones((24, 24)), None, max_side=1024)
    assert display.size == (1024, 768)
    assert dbox == pytest.approx((128, 0, 896, 768), abs=1.0)  # geometry scaled with the image
    assert_not_blank(render_triptych(img, np.random.default_rng(0).random((24, 24)), None, "big", tmp_path / "b.png"))


@pytest.mark.slow
def test_huge_jpeg_memory_bounded(tmp_path):
    """A 12000x9000 JPEG (324 MB decoded) is drawn without decoding it at full size."""
    p = tmp_path / "huge.jpg"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from PIL import Image, ImageDraw
        im = Image.new('RGB', (12000, 9000), (90, 140, 200))
        ImageDraw.Draw(im).rectangle((3000, 2000, 9000, 7000), fill=(200, 60, 20))
        im.save({str(p)!r}, quality=80)
    """)], check=True)
    code = textwrap.dedent(f"""
        import numpy as np
        from attn_assets.figures import render_triptych
        render_triptych({str(p)!r}, np.random.default_rng(0).random((24, 24)), None, 'huge', {str(tmp_path / 'h.png')!r})
        # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept across execve)
        print([int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])
    """)
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak_mb = int(res.stdout.strip().splitlines()[-1])
    print(f"peak RSS rendering a 12000x9000 JPEG: {peak_mb} MB")
    assert peak_mb < 300, peak_mb
    assert_not_blank(tmp_path / "h.png")

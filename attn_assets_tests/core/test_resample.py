"""The compiled resize (attn_assets.core.resample) against Pillow itself.

Tolerance 0 throughout: Pillow's resize is integer arithmetic on 22-bit fixed-point weights, so the same weights
summed in any order give the same bytes; any difference is a bug, not rounding.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from attn_assets.core import preprocess as preprocess_module
from attn_assets.core import resample
from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.resample import COMPILED_FILTERS, axis_coefficients, horizontal_first
from attn_assets.crop_geometry import crop_geometry

pytestmark = pytest.mark.skipif(not resample.compiled_available(), reason="numba is not installed")

# odd sizes; upscales; 1-pixel strips; sizes where one axis keeps its size (Pillow skips that pass); both orders
SIZES = ((97, 61), (61, 97), (337, 341), (792, 512), (512, 792), (300, 1000), (1000, 300), (1, 400), (400, 1),
         (2, 3), (336, 700), (700, 336), (336, 336), (2001, 1499), (339, 1200), (1601, 339))
CROPS = ((48, 48), (336, 336), (224, (200, 224)), (500, (400, 300)), (336, None), (97, None))


def _scalar_coefficients(in_size: int, out_size: int, resample_filter) -> tuple[list, list]:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc, one output pixel and one tap at a time in Python
    floats (the slow reference for axis_coefficients)."""
    def bicubic(x):
        a = -0.5
        x = abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    filters = {Image.Resampling.BICUBIC: (bicubic, 2.0),
               Image.Resampling.BILINEAR: (lambda x: 1.0 - abs(x) if abs(x) < 1.0 else 0.0, 1.0),
               Image.Resampling.BOX: (lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0, 0.5)}
    filter_fn, support = filters[resample_filter]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    bounds, weights = [], []
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - xmin
        taps = [filter_fn((x + xmin - center + 0.5) * (1.0 / filterscale)) for x in range(count)]
        total = 0.0
        for w in taps:
            total += w
        taps = [w / total for w in taps] if total != 0.0 else taps
        bounds.append((xmin, count))
        weights.append([int(-0.5 + w * (1 << 22)) if w < 0 else int(0.5 + w * (1 << 22)) for w in taps])
    return bounds, weights


@pytest.mark.parametrize("resample_filter", COMPILED_FILTERS)
def test_axis_coefficients_equal_a_scalar_replay_of_pillow(resample_filter):
    for in_size, out_size in ((792, 519), (512, 336), (61, 336), (4000, 336), (3, 2), (1, 7), (336, 336), (999, 1)):
        bounds, weights = axis_coefficients(in_size, out_size, resample_filter)
        ref_bounds, ref_weights = _scalar_coefficients(in_size, out_size, resample_filter)
        assert bounds.tolist() == [list(b) for b in ref_bounds], (in_size, out_size)
        for row, ref_row, (_, count) in zip(weights.tolist(), ref_weights, ref_bounds):
            assert row[:count] == ref_row and not any(row[count:]), (in_size, out_size)
        assert weights.shape[1] == int(math.ceil(resample.FILTER_SUPPORT[resample_filter]
                                                 * max(in_size / out_size, 1.0))) * 2 + 1


@pytest.mark.parametrize("resample_filter", COMPILED_FILTERS)
def test_compiled_resize_crop_equals_pillows_resize_then_crop(resample_filter):
    """Byte for byte, on random noise (every pixel near some rounding tie), in both pass orders and where Pillow
    skips a pass."""
    rng = np.random.default_rng(int(resample_filter))
    orders, skipped = set(), set()
    for width, height in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        one_axis = (({"height": height, "width": width // 2 + 1}, None),  # fixed sizes keeping one axis
                    ({"height": height // 2 + 1, "width": width}, (height // 2 + 1, max(width - 2, 1))))
        for edge, crop in CROPS + one_axis:
            g = crop_geometry(width, height, edge, crop)
            if g.left < 0 or g.top < 0:
                continue
            expected = np.asarray(image.resize((g.resized_width, g.resized_height), resample=resample_filter)
                                  .crop((g.left, g.top, g.left + g.crop_width, g.top + g.crop_height)))
            got = resample.resize_crop(image, g, resample_filter)
            assert got.shape == expected.shape and np.array_equal(got, expected), (width, height, edge, crop)
            assert got.flags.writeable and got.dtype == np.uint8
            orders.add(horizontal_first(width, height, g.resized_width, g.resized_height))
            skipped.add((g.resized_width == width, g.resized_height == height))
    assert orders == ({True, False} if int(Image.__version__.split(".")[0]) >= 13 else {True})
    assert {(True, False), (False, True), (False, False)} <= skipped


def test_compiled_resize_crop_of_a_greyscale_image():
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (512, 792), dtype=np.uint8), mode="L")
    g = crop_geometry(792, 512, 336, 336)
    expected = np.asarray(image.resize((g.resized_width, g.resized_height), Image.Resampling.BICUBIC)
                          .crop((g.left, g.top, g.left + 336, g.top + 336)))
    got = resample.resize_crop(image, g, Image.Resampling.BICUBIC)
    assert got.shape == expected.shape == (336, 336) and np.array_equal(got, expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "LAB", "F", "I", "I;16", "CMYK"])
def test_other_modes_are_refused_not_resized_wrongly(mode):
    """Pillow resizes these differently (premultiplied alpha, signed LAB channels, palettes by nearest neighbour,
    wider pixels), so the compiled resize refuses them instead of returning other bytes."""
    rgba = np.random.default_rng(9).integers(0, 256, (61, 97, 4), dtype=np.uint8)
    image = Image.fromarray(rgba, mode="RGBA").convert(mode) if mode != "I;16" else \
        Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    with pytest.raises(ValueError, match=f"RGB or L images, got mode {image.mode!r}"):
        resample.resize_crop(image, crop_geometry(97, 61, 48, 40), Image.Resampling.BICUBIC)


def test_cached_weights_cannot_be_changed_by_a_caller():
    bounds, weights = axis_coefficients(792, 519, Image.Resampling.BICUBIC)
    with pytest.raises(ValueError, match="read-only"):
        weights[:] = 0
    with pytest.raises(ValueError, match="read-only"):
        bounds[0, 0] = 1


def test_preprocessor_compiled_and_pillow_passes_give_the_processors_values():
    processor = make_clip_processor(336)
    compiled, pillow = Preprocessor(processor), Preprocessor(processor, compiled=False)
    assert compiled.fast and compiled.compiled and pillow.fast and not pillow.compiled
    rng = np.random.default_rng(5)
    for width, height in ((792, 512), (512, 792), (337, 1201), (1201, 337), (400, 400)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        pixels = compiled.pixels(image)
        assert torch.equal(pixels, pillow.pixels(image)), (width, height)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]
        assert torch.equal(compiled.normalize(pixels[None]), theirs), (width, height)


def test_filters_with_sin_keep_pillows_passes():
    processor = make_clip_processor(48)
    processor.resample = Image.Resampling.LANCZOS
    lanczos = Preprocessor(processor)
    assert lanczos.fast and not lanczos.compiled


def test_without_numba_pillows_passes_are_used(monkeypatch):
    monkeypatch.setattr(resample, "_kernels", lambda: None)
    monkeypatch.setattr(preprocess_module, "compiled_available", resample.compiled_available)
    processor = make_clip_processor(48)
    preprocess = Preprocessor(processor)
    assert preprocess.fast and not preprocess.compiled
    image = Image.fromarray(np.random.default_rng(6).integers(0, 256, (61, 97, 3), dtype=np.uint8))
    assert torch.equal(preprocess(image), processor(images=image, return_tensors="pt")["pixel_values"][0])
    with pytest.raises(RuntimeError, match="pip install numba"):
        resample.resize_crop(image, preprocess.crop_geometry(97, 61), Image.Resampling.BICUBIC)


def test_a_compiled_resize_that_differs_falls_back_to_pillows_passes(monkeypatch, caplog):
    """Should Pillow ever change its arithmetic, the probes at construction catch it: Pillow's passes, a warning."""
    real = resample.resize_crop

    def off_by_one(image, geometry, resample_filter):
        pixels = real(image, geometry, resample_filter)
        pixels[0, 0, 0] ^= 1
        return pixels

    monkeypatch.setattr(preprocess_module, "compiled_resize_crop", off_by_one)
    with caplog.at_level(logging.WARNING, logger="attn_assets.core.preprocess"):
        preprocess = Preprocessor(make_clip_processor(48))
    assert preprocess.fast and not preprocess.compiled
    assert "compiled resize differs" in caplog.text and "using the processor" not in caplog.text


def test_without_a_writable_cache_location_it_compiles_in_process(monkeypatch):
    """numba raises RuntimeError ("no locator available") at decoration when no cache folder is writable (a
    read-only install without HOME): the passes are then compiled per process, with the same bytes."""
    import numba

    real_njit = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'resample_rows': no locator available for file")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    resample._compile.cache_clear()
    try:
        assert resample.compiled_available()
        image = Image.fromarray(np.random.default_rng(8).integers(0, 256, (61, 97, 3), dtype=np.uint8))
        g = crop_geometry(97, 61, 48, 48)
        expected = np.asarray(image.resize((g.resized_width, g.resized_height), Image.Resampling.BICUBIC)
                              .crop((g.left, g.top, g.left + 48, g.top + 48)))
        assert np.array_equal(resample.resize_crop(image, g, Image.Resampling.BICUBIC), expected)
    finally:
        resample._compile.cache_clear()


@pytest.mark.parametrize("strip_pixels", [1, 777])
def test_the_first_pass_in_strips_gives_the_same_bytes(monkeypatch, strip_pixels):
    """A photo over STRIP_PIXELS is read in strips of rows (columns); shrunk here so that small images take many
    strips, including strips of one row or column and a last, shorter one."""
    monkeypatch.setattr(resample, "STRIP_PIXELS", strip_pixels)
    rng = np.random.default_rng(10)
    orders = set()
    for width, height in ((97, 61), (61, 97), (300, 1000), (1000, 300), (792, 512), (336, 700)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for edge, crop in ((48, 48), (224, (200, 224)), ({"height": height, "width": width // 2 + 1}, None)):
            g = crop_geometry(width, height, edge, crop)
            expected = np.asarray(image.resize((g.resized_width, g.resized_height), Image.Resampling.BICUBIC)
                                  .crop((g.left, g.top, g.left + g.crop_width, g.top + g.crop_height)))
            assert np.array_equal(resample.resize_crop(image, g, Image.Resampling.BICUBIC), expected), (width, height)
            orders.add(horizontal_first(width, height, g.resized_width, g.resized_height))
    assert len(orders) == (2 if int(Image.__version__.split(".")[0]) >= 13 else 1)

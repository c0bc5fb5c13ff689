import numpy as np
import pytest
import torch
from PIL import Image

from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor, load_rgb, resized_shape


@pytest.mark.parametrize("size", [48, 336])
def test_preprocessor_equals_processor(sample_images, size):
    processor = make_clip_processor(size)
    preprocess = Preprocessor(processor)
    assert preprocess.fast
    for name, path in sample_images.items():
        image = load_rgb(path)
        ours = preprocess(image)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert ours.dtype == torch.float32 and ours.shape == (3, size, size)
        assert float((ours - theirs).abs().max()) <= 1e-6, name


def test_preprocessor_equals_vit_processor(sample_images):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 40, "width": 40})
    preprocess = Preprocessor(processor)
    for path in list(sample_images.values())[:5]:
        image = load_rgb(path)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert float((preprocess(image) - theirs).abs().max()) <= 1e-6


def test_fast_path_is_refused_when_it_would_differ(monkeypatch):
    processor = make_clip_processor(48)
    monkeypatch.setattr(Preprocessor, "_fast", lambda self, image: torch.zeros(3, 48, 48))
    preprocess = Preprocessor(processor)
    assert not preprocess.fast
    image = Image.new("RGB", (60, 50), (10, 200, 30))
    assert torch.equal(preprocess(image), processor(images=image, return_tensors="pt")["pixel_values"][0])


def test_crop_geometry_for_osv_photo():
    preprocess = Preprocessor(make_clip_processor(336), verify=False)
    g = preprocess.crop_geometry(792, 512)
    assert (g.resized_width, g.resized_height) == (519, 336)
    assert (g.left, g.top, g.crop_width, g.crop_height) == (91, 0, 336, 336)
    left, top, right, bottom = g.box_in_original()
    assert top == 0 and bottom == pytest.approx(512)
    assert left == pytest.approx(91 * 792 / 519) and right == pytest.approx(427 * 792 / 519)
    assert (right - left) / 792 == pytest.approx(0.647, abs=0.01)  # ~35% of the width is cut away
    assert resized_shape(512, 792, {"shortest_edge": 336}) == (336, 519)


def test_crop_geometry_follows_the_processor_not_the_model_config(sample_images):
    """A DINOv2 processor (shortest edge 256, centre crop 224; the config says 518): the view is its crop."""
    from transformers import BitImageProcessor

    processor = BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    preprocess = Preprocessor(processor)
    assert preprocess.output_size == (224, 224)
    g = preprocess.crop_geometry(792, 512)  # resized to 396x256 (scale 0.5), crop offsets (396-224)//2, (256-224)//2
    assert (g.resized_width, g.resized_height, g.left, g.top) == (396, 256, 86, 16)
    assert g.box_in_original() == (172.0, 32.0, 620.0, 480.0)
    # Both paths compute (x / 255 - mean) / std in float32 from the same uint8 value x; if they order those
    # operations differently, each of the <= 3 roundings moves the result (|value| <= (1 - 0.406) / 0.225
    # < 2.7) by <= u * 2.7 with u = 2**-24, so the two differ by <= 2 * 3 * 2.7 * 2**-24 < 1e-6.
    for name in ("wide_792x512.jpg", "tall_512x792.jpg", "small_97x61.png", "panorama_1600x300.jpg"):
        image = load_rgb(sample_images[name])
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert float((preprocess(image) - theirs).abs().max()) <= 2 * 3 * 2.7 * 2.0**-24, name


def test_load_rgb_matches_seed_for_ordinary_modes(sample_images):
    for name in ("wide_792x512.jpg", "gray_L.jpg", "rgba.png", "cmyk.jpg", "palette_transparent.png"):
        ours = load_rgb(sample_images[name])
        with Image.open(sample_images[name]) as image:
            seed = image.convert("RGB")
        assert ours.mode == "RGB"
        assert np.array_equal(np.asarray(ours), np.asarray(seed)), name


def test_load_rgb_scales_16_bit_instead_of_clipping(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]


def test_load_rgb_16_bit_sample_is_not_white(sample_images):
    rgb = np.asarray(load_rgb(sample_images["gray16.png"]))
    with Image.open(sample_images["gray16.png"]) as image:
        eight = np.asarray(image).astype(np.uint32) // 257
    assert np.abs(rgb[..., 0].astype(int) - eight).max() <= 1
    assert rgb.mean() < 250


def test_load_rgb_first_frame_of_gif(sample_images):
    with Image.open(sample_images["animated.gif"]) as image:
        assert getattr(image, "n_frames", 1) == 3
        first = image.convert("RGB")
        image.seek(2)
    assert np.array_equal(np.asarray(load_rgb(sample_images["animated.gif"])), np.asarray(first))


def test_load_rgb_ignores_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (40, 20)


def test_load_rgb_keeps_bomb_limit(bad_images):
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(bad_images["bomb"][0])
    assert Image.MAX_IMAGE_PIXELS == limit


def test_truncated_jpeg_raises(bad_images):
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(OSError):
        load_rgb(bad_images["truncated"][0])


def test_uint8_pixels_then_normalize_equal_the_processor_on_odd_sizes():
    """Exact path, uint8 until normalize: 1e-6 of the processor (the lookup holds the processor's own float32
    values, so the only room is none; 1e-6 is the project's bound for 'identical')."""
    processor = make_clip_processor(336)
    preprocess = Preprocessor(processor)
    rng = np.random.default_rng(3)
    for width, height in ((793, 511), (511, 793), (337, 1001), (1601, 339), (97, 61)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        pixels = preprocess.pixels(image)
        assert pixels.dtype == torch.uint8 and pixels.shape == (336, 336, 3)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]
        assert float((preprocess.normalize(pixels[None]) - theirs).abs().max()) <= 1e-6, (width, height)


def test_crop_region_resize_is_close_to_the_processor_and_stated(sample_images):
    """resize='crop_region': within a few grey levels of the processor. On OSV-5M's 792x512 landscape size at most
    one grey level (one step of the normalisation table, ~0.0150 for CLIP's std) on under 1% of values; every
    sample within CROP_REGION_TOLERANCE levels (the bound's derivation is at its definition)."""
    from attn_assets.core.preprocess import CROP_REGION_TOLERANCE

    processor = make_clip_processor(336)
    exact, region = Preprocessor(processor), Preprocessor(processor, resize="crop_region")
    assert region.fast
    step = region._grey_level
    osv = load_rgb(sample_images["wide_792x512.jpg"])
    diff = (exact.pixels(osv).int() - region.pixels(osv).int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
    for path in sample_images.values():
        image = load_rgb(path)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert float((region(image) - theirs).abs().max()) <= CROP_REGION_TOLERANCE * step + 1e-6, path.name


def test_unknown_resize_mode_is_refused(monkeypatch):
    from attn_assets.settings import resize_setting

    with pytest.raises(ValueError, match="exact, crop_region"):
        Preprocessor(make_clip_processor(48), resize="fastest")
    monkeypatch.setenv("ATTN_ASSETS_RESIZE", "box")
    with pytest.raises(ValueError, match="ATTN_ASSETS_RESIZE='box': use one of exact, crop_region"):
        resize_setting()


# Odd sizes: 1-pixel-wide and -tall strips, tiny upscaled images, portraits whose crop drops rows, tall photos
# Pillow 13 resizes vertical pass first, landscapes whose crop offset (resized - crop) / 2 rounds down.
ODD_SIZES = ((1, 50), (50, 1), (1, 3), (3, 1), (2, 700), (5, 4), (97, 61), (512, 792), (513, 792), (792, 513),
             (337, 1001), (339, 1200), (400, 2000), (1601, 339), (225, 226), (336, 1009))


@pytest.mark.parametrize("size", [336, 224])
def test_exact_path_equals_the_processor_on_odd_sizes(size):
    """StreetCLIP's 336 and a 224 shape: the split-pass resize + lookup gives the processor's float32 values
    exactly (tolerance 0: the table holds the processor's own values for each uint8 level, and the uint8 pixels
    are PIL's own, so there is no rounding left to allow for)."""
    processor = make_clip_processor(size)
    preprocess = Preprocessor(processor)
    assert preprocess.fast
    rng = np.random.default_rng(size)
    for width, height in ODD_SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        pixels = preprocess.pixels(image)
        assert pixels.dtype == torch.uint8 and pixels.shape == (size, size, 3), (width, height)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]
        assert torch.equal(preprocess.normalize(pixels[None]), theirs), (width, height)


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR,
                                      Image.Resampling.LANCZOS, Image.Resampling.BOX, Image.Resampling.NEAREST])
def test_split_resize_equals_pillows_whole_resize_then_crop(resample):
    """exact_resize_crop == image.resize(resized size).crop(crop box), byte for byte, in both pass orders."""
    from attn_assets.core.preprocess import exact_resize_crop
    from attn_assets.core.resample import horizontal_first
    from attn_assets.crop_geometry import crop_geometry

    rng = np.random.default_rng(int(resample))
    orders = set()
    for width, height in ODD_SIZES + ((792, 512), (300, 1000), (1000, 300)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for edge, crop in ((48, 48), (336, 336), (224, 200)):
            g = crop_geometry(width, height, edge, crop)
            whole = image.resize((g.resized_width, g.resized_height), resample=resample)
            expected = whole.crop((g.left, g.top, g.left + g.crop_width, g.top + g.crop_height))
            assert np.array_equal(np.asarray(exact_resize_crop(image, g, resample)), np.asarray(expected)), \
                (width, height, edge, crop)
            orders.add(horizontal_first(width, height, g.resized_width, g.resized_height))
    assert orders == ({True, False} if int(Image.__version__.split(".")[0]) >= 13 else {True})


def test_crop_region_keeps_pillows_pass_order_on_portraits():
    """Portraits once came out up to 12 grey levels off: PIL's own box resize chose the vertical pass first for
    the box while the processor's whole resize runs the horizontal pass first. Now within the stated bound."""
    from attn_assets.core.preprocess import CROP_REGION_TOLERANCE

    processor = make_clip_processor(336)
    exact, region = Preprocessor(processor), Preprocessor(processor, resize="crop_region")
    assert region.fast and region.resize == "crop_region"
    rng = np.random.default_rng(11)
    for width, height in ((512, 792), (511, 793), (792, 512), (339, 1200), (1601, 339)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        diff = (exact.pixels(image).int() - region.pixels(image).int()).abs()
        assert int(diff.max()) <= CROP_REGION_TOLERANCE, (width, height)


def test_cpu_lookup_equals_the_device_gather():
    """normalize on a CPU batch (np.take per channel) gives the same values as the gather used on devices."""
    from attn_assets.core.preprocess import lookup_channels

    preprocess = Preprocessor(make_clip_processor(48), verify=False)
    pixels = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8))
    table = torch.from_numpy(preprocess._lut).reshape(-1)
    gathered = table[pixels.to(torch.int32) + torch.tensor([0, 256, 512], dtype=torch.int32)].permute(0, 3, 1, 2)
    assert torch.equal(torch.from_numpy(lookup_channels(pixels.numpy(), preprocess._lut)), gathered)
    assert torch.equal(preprocess.normalize(pixels), gathered)


def test_crop_region_outside_its_bound_falls_back_to_the_exact_resize():
    """A box filter (support 0.5) turns the float32 box edges into whole-pixel jumps, far past the bound: the
    setting is then dropped for the exact resize, still fast, instead of for the processor."""
    processor = make_clip_processor(48)
    processor.resample = Image.Resampling.BOX
    region = Preprocessor(processor, resize="crop_region")
    assert region.resize == "exact" and region.fast
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (61, 97, 3), dtype=np.uint8))
    assert torch.equal(region(image), processor(images=image, return_tensors="pt")["pixel_values"][0])

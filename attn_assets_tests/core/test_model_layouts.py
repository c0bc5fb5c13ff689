"""Token layouts beyond CLS + the config's grid, and processors that do not fit their model.

Every model here is a tiny random one built offline, saved with ``save_pretrained`` beside an
image processor, and loaded through ``load_encoder`` like a user's folder:

- Dinov2Model whose config.image_size (56) is larger than the processor's crop (32): the grid
  comes from the crop (8x8 of 4-px patches), not the config (14x14), as for DINOv2 checkpoints
  (518 vs 224);
- Dinov2WithRegistersModel (4 registers after CLS);
- DeiTModel (CLS + distillation token);
- CLIPVisionModel and ViTModel (CLS + grid).

The extracted CLS rows are compared with the model's own eager ``output_attentions=True`` to the
float32 bound derived in ``float32_bounds``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_assets.core.extract import eager_attention, extract_records
from attn_assets.core.loader import ImageRecord
from attn_assets.core.metrics import attention_metrics, metrics_to_numpy
from attn_assets.metric_names import METRIC_NAMES
from attn_assets.core.model import (
    ModelLoadError,
    describe_encoder,
    find_attention_site,
    find_layers,
    load_encoder,
    make_clip_processor,
)
from attn_assets.core.preprocess import Preprocessor, ProcessorSizeError, load_rgb, processor_input_size
from attn_assets_tests.core.float32_bounds import cls_row_bound

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return build()


def _sharpen(model, q_factor: float = 12.0, k_factor: float = 4.0) -> None:
    """Scale the last layer's q/k so its CLS row is peaked: a misplaced column then shows."""
    config = model.config
    layer = find_layers(model, config.num_hidden_layers)[-1]
    site = find_attention_site(layer, config.num_attention_heads)
    with torch.no_grad():
        site.q.weight.mul_(q_factor)
        site.k.weight.mul_(k_factor)


def _save(directory: Path, model, processor) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _bit_processor(shortest: int, crop: int):
    from transformers import BitImageProcessor

    return BitImageProcessor(size={"shortest_edge": shortest}, crop_size={"height": crop, "width": crop},
                             image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def _dinov2(registers: int = 0, image_size: int = 56):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   patch_size=4, image_size=image_size)
    if registers:
        return _seeded(lambda: Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers,
                                                                                  **options)))
    return _seeded(lambda: Dinov2Model(Dinov2Config(**options)))


def _clip(image_size: int, patch_size: int):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=image_size, patch_size=patch_size)
    return _seeded(lambda: CLIPVisionModel(config))


@dataclass(frozen=True)
class Layout:
    grid: tuple[int, int]
    prefix: int  # CLS + distillation + registers
    registers: int
    architecture: str


def _build_dinov2(root):
    model = _dinov2()
    _sharpen(model, 30.0, 8.0)
    return _save(root, model, _bit_processor(36, 32)), Layout((8, 8), 1, 0, "Dinov2Model")


def _build_dinov2_registers(root):
    model = _dinov2(registers=4)
    _sharpen(model, 30.0, 8.0)
    return _save(root, model, _bit_processor(36, 32)), Layout((8, 8), 5, 4, "Dinov2WithRegistersModel")


def _build_deit(root):
    from transformers import DeiTConfig, DeiTImageProcessor, DeiTModel

    config = DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=32, patch_size=8)
    model = _seeded(lambda: DeiTModel(config, add_pooling_layer=False))
    _sharpen(model, 30.0, 8.0)
    processor = DeiTImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32},
                                   image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return _save(root, model, processor), Layout((4, 4), 2, 0, "DeiTModel")


def _build_clip(root):
    model = _clip(40, 8)
    _sharpen(model)
    return _save(root, model, make_clip_processor(40)), Layout((5, 5), 1, 0, "CLIPVisionModel")


def _build_vit(root):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    model = _seeded(lambda: ViTModel(config, add_pooling_layer=False))
    _sharpen(model, 30.0, 8.0)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return _save(root, model, processor), Layout((4, 4), 1, 0, "ViTModel")


BUILDERS = {
    "dinov2": _build_dinov2,
    "dinov2_registers": _build_dinov2_registers,
    "deit": _build_deit,
    "clip": _build_clip,
    "vit": _build_vit,
}


@pytest.fixture(scope="module")
def layout_models(tmp_path_factory) -> dict[str, tuple[Path, Layout]]:
    root = tmp_path_factory.mktemp("layouts")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def six_images(sample_images) -> list[Path]:
    names = ["wide_792x512.jpg", "tall_512x792.jpg", "square_300.png", "small_97x61.png", "panorama_1600x300.jpg",
             "rgba.png"]
    return [sample_images[name] for name in names]


def _capture_last_input(encoder, store: list):
    """Pre-hook on the last attention module that keeps a copy of its input ``[B, T, D]``."""

    def hook(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        store.append(hidden.detach().float().clone())

    return encoder.attention_sites[-1].module.register_forward_pre_hook(hook, with_kwargs=True)


def _eager_reference(encoder, paths):
    """(CLS rows ``[B, H, T]`` of the last layer, the last layer's input ``[B, T, D]``), eager, own forward."""
    preprocess = Preprocessor(encoder.processor)
    pixels = torch.stack([preprocess(load_rgb(p)) for p in paths])
    store: list[torch.Tensor] = []
    handle = _capture_last_input(encoder, store)
    try:
        with eager_attention(encoder.model), torch.no_grad():
            outputs = encoder.model(pixel_values=pixels, output_attentions=True)
    finally:
        handle.remove()
    assert outputs.attentions, "eager attention returned no weights"
    return outputs.attentions[-1][:, :, 0].float(), store[0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_layout_and_cls_row_match_eager(name, layout_models, six_images):
    directory, layout = layout_models[name]
    encoder = load_encoder(str(directory))
    assert encoder.architecture == layout.architecture
    assert encoder.grid_size == layout.grid and encoder.num_patches == layout.grid[0] * layout.grid[1]
    assert (encoder.num_prefix_tokens, encoder.num_register_tokens) == (layout.prefix, layout.registers)
    assert encoder.model.config._attn_implementation == "sdpa"

    # the users' path: extract_records on the default (SDPA) attention, one batch
    records = [ImageRecord(f"img{i}", str(p)) for i, p in enumerate(six_images)]
    captured: list[torch.Tensor] = []
    handle = _capture_last_input(encoder, captured)
    try:
        (result,) = list(extract_records(encoder, records, batch_size=len(records), num_workers=0))
    finally:
        handle.remove()
    assert not result.failures and result.cls_maps.shape == (len(records), *layout.grid)

    attention, hidden_ref = _eager_reference(encoder, six_images)  # [B, H, T], [B, T, D]
    assert attention.shape[-1] == layout.prefix + encoder.num_patches
    bound = cls_row_bound(hidden_ref, captured[0], encoder.attention_sites[-1], attention)  # [B, T]
    expected = attention[:, :, layout.prefix:].mean(dim=1).double()  # patch columns only
    # peaked attention: on a near-uniform row a layout bug (registers counted as patches) would pass unnoticed
    ratio = expected.amax(-1) / expected.amin(-1)
    assert (ratio > 10).all(), f"{name}: CLS row not peaked enough to catch a layout error: max/min {ratio}"
    got = torch.from_numpy(result.cls_maps.reshape(len(records), -1)).double()
    excess = (got - expected).abs() - bound[:, layout.prefix:]
    assert excess.max() <= 0, f"{name}: CLS row off by more than the float32 bound ({excess.max():.3g})"
    # the bound is tight enough to see a layout error: a row read one column off is far outside it
    shifted = attention[:, :, layout.prefix - 1:-1].mean(dim=1).double()
    assert (shifted - expected).abs().max() > 100 * bound.max(), "bound too loose to detect a misplaced column"

    # the seed metrics are those of the patch map (prefix columns dropped, not renormalised)
    from_map = metrics_to_numpy(attention_metrics(torch.from_numpy(result.cls_maps.reshape(len(records), -1))))
    for metric in METRIC_NAMES:
        np.testing.assert_array_equal(result.metrics[metric], from_map[metric])

    share = result.register_attention_share
    if layout.registers:
        # registers are columns 1 .. R of the CLS row: heads averaged, then summed over registers
        reference = attention[:, :, 1:1 + layout.registers].mean(dim=1).sum(dim=-1).double()
        register_bound = bound[:, 1:1 + layout.registers].sum(dim=-1) + layout.registers * 2.0**-24 * 2 * reference
        assert ((torch.from_numpy(share) - reference).abs() <= register_bound).all()
        assert np.all((share > 0) & (share < 1))
    else:
        assert share.shape == (len(records),) and np.isnan(share).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_rollout_drops_every_prefix_column(name, layout_models, six_images):
    """Rollout over the patches only, for every token layout, against the per-image float64 reference."""
    from attn_assets.core.rollout import RolloutExtractor
    from attn_assets_tests.analyses import reference

    directory, layout = layout_models[name]
    encoder = load_encoder(str(directory))
    preprocess = Preprocessor(encoder.processor)
    pixels = torch.stack([preprocess(load_rgb(p)) for p in six_images[:3]])
    rows, _ = RolloutExtractor(encoder, precision="fp32")(pixels)
    assert rows.shape == (3, encoder.num_patches)
    with eager_attention(encoder.model), torch.no_grad():
        attentions = encoder.model(pixel_values=pixels, output_attentions=True).attentions
    for i in range(3):
        expected = reference.rollout([a[i].double().numpy() for a in attentions], prefix=layout.prefix)
        # the analyses' fidelity bar (attn_assets_tests/analyses/test_reference.py TOL)
        np.testing.assert_allclose(rows[i].double().numpy(), expected, atol=1e-5, rtol=0, err_msg=name)


def test_registers_flow_into_same_pass_analyses(layout_models, six_images):
    """analyses=True (the shard path) keeps patch-only norms and carries the register share."""
    records = [ImageRecord(f"img{i}", str(p)) for i, p in enumerate(six_images[:3])]
    registers = load_encoder(str(layout_models["dinov2_registers"][0]))
    (result,) = list(extract_records(registers, records, batch_size=3, num_workers=0, analyses=True))
    np.testing.assert_array_equal(result.analyses["register_attention_share"], result.register_attention_share)
    assert len(result.analyses["artifact_count"]) == 3
    assert all(max(indices, default=0) < registers.num_patches for indices in result.analyses["artifact_indices"])
    plain = load_encoder(str(layout_models["dinov2"][0]))
    (result,) = list(extract_records(plain, records, batch_size=3, num_workers=0, analyses=True))
    assert "register_attention_share" not in result.analyses  # NULL in the shard for models without registers


def test_deit_distilled_hub_layout_loads(tmp_path):
    """DeiT ships as DeiTForImageClassificationWithTeacher: its two classifier heads are not the encoder."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, DeiTImageProcessor

    config = DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=32, patch_size=8, num_labels=3)
    processor = DeiTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    encoder = load_encoder(str(_save(tmp_path, _seeded(lambda: DeiTForImageClassificationWithTeacher(config)),
                                     processor)))
    assert encoder.architecture == "DeiTModel" and encoder.num_prefix_tokens == 2


# --------------------------------------------------------------------------- refused at load


def _refusal(directory: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_encoder(str(directory))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot use the model folder {directory}")
    return message


def _break_weights(directory: Path) -> None:
    """Garbage weights: a refusal that still names the processor was decided before any weights were read."""
    (directory / "model.safetensors").write_bytes(b"not safetensors")


def test_clip_processor_cropping_192_for_a_224_model_is_refused(tmp_path):
    directory = _save(tmp_path, _clip(224, 32), make_clip_processor(192))
    _break_weights(directory)
    message = _refusal(directory)
    for part in (f"{directory}/preprocessor_config.json crop_size makes 192x192 inputs",
                 "CLIPVisionModel expects 224x224", f"({directory}/config.json: image_size 224)",
                 "does not interpolate", "Save the image processor that belongs to these weights beside them"):
        assert part in message, (part, message)


def test_224_processor_beside_336_weights_is_refused(tmp_path):
    directory = _save(tmp_path, _clip(336, 14), make_clip_processor(224))
    message = _refusal(directory)
    for part in (f"{directory}/preprocessor_config.json crop_size makes 224x224 inputs",
                 "expects 336x336", f"({directory}/config.json: image_size 336)", "24x24 grid of 14-px patches"):
        assert part in message, (part, message)


@pytest.mark.parametrize("key", ["image_mean", "image_std"])
def test_processor_without_normalization_values_is_refused(tmp_path, key):
    directory = _save(tmp_path, _dinov2(), _bit_processor(36, 32))
    settings_file = directory / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text())
    del settings[key]
    settings_file.write_text(json.dumps(settings))
    _break_weights(directory)
    message = _refusal(directory)
    assert f"{settings_file} has no {key}" in message
    assert "would silently use its class default" in message and 'Write the model\'s "image_mean" and "image_std"' in message


def test_normalization_switched_off_is_refused(tmp_path):
    processor = _bit_processor(36, 32)
    processor.do_normalize = False
    message = _refusal(_save(tmp_path, _dinov2(), processor))
    assert "preprocessor_config.json sets do_normalize false" in message


def test_crop_not_divisible_by_patch_is_refused_even_when_interpolating(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    model = _seeded(lambda: Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, patch_size=14, image_size=518)))
    directory = _save(tmp_path, model, _bit_processor(256, 226))
    message = _refusal(directory)
    for part in ("preprocessor_config.json crop_size makes 226x226 inputs", "not a whole number of 14x14-px patches",
                 "config.json: patch_size 14", "Set crop_size", "multiple of 14 (e.g. 224x224)"):
        assert part in message, (part, message)


def test_dinov2_crop_smaller_than_config_image_size_is_accepted(tmp_path):
    """Item 8's other half: DINOv2 checkpoints say image_size 518 and crop 224; they interpolate."""
    from transformers import Dinov2Config, Dinov2Model

    model = _seeded(lambda: Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, patch_size=14, image_size=518)))
    encoder = load_encoder(str(_save(tmp_path, model, _bit_processor(256, 224))))
    assert encoder.grid_size == (16, 16) and encoder.input_size == (224, 224) and encoder.image_size == 224


def test_resize_smaller_than_crop_is_refused(tmp_path):
    message = _refusal(_save(tmp_path, _dinov2(), _bit_processor(28, 32)))
    assert "preprocessor_config.json setting size: size.shortest_edge 28 is smaller than crop_size 32x32" in message
    assert "padded" in message


def test_processor_without_a_fixed_input_size_is_refused(tmp_path):
    processor = make_clip_processor(40)
    processor.do_center_crop = False
    message = _refusal(_save(tmp_path, _clip(40, 8), processor))
    assert "preprocessor_config.json setting do_center_crop" in message
    assert "depends on its aspect ratio" in message and '"do_center_crop": true' in message


@pytest.mark.parametrize("kind", ["siglip2", "swin", "beit"])
def test_unsupported_architectures_are_refused_by_class_name(tmp_path, kind):
    import transformers as t

    if kind == "siglip2":  # SigLIP itself is supported (attn_assets_tests/core/test_siglip.py)
        model = t.Siglip2VisionModel(t.Siglip2VisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=64, patch_size=8, num_patches=16))
        name, reason = "Siglip2VisionModel", "NaFlex"
    elif kind == "swin":
        model = t.SwinModel(t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1], num_heads=[1],
                                         window_size=2))
        name, reason = "SwinModel", "shifted windows"
    else:
        model = t.BeitModel(t.BeitConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, image_size=32, patch_size=8,
                                         use_relative_position_bias=True))
        name, reason = "BeitModel", "relative position bias"
    directory = _save(tmp_path, model, make_clip_processor(32))
    message = _refusal(directory)
    assert f"{name} ({directory}/config.json: model_type" in message and reason in message
    assert "is not supported" in message and "Dinov2WithRegistersModel" in message


def test_describe_encoder_checks_an_in_memory_processor(tiny_model_dir):
    """The notebook path (describe_encoder) refuses a mismatched processor just the same."""
    encoder = load_encoder(str(tiny_model_dir))
    with pytest.raises(ModelLoadError, match=r"the image processor crop_size makes 32x32 inputs, but CLIPVisionModel "
                                             r"expects 48x48 \(the model config: image_size 48\)"):
        describe_encoder(encoder.model, make_clip_processor(32), "notebook")


def test_processor_input_size_reads_the_processor_not_the_config():
    from transformers import ViTImageProcessor

    assert processor_input_size(_bit_processor(256, 224)) == (224, 224)
    assert processor_input_size(ViTImageProcessor(size={"height": 32, "width": 48})) == (32, 48)
    with pytest.raises(ProcessorSizeError) as info:
        processor_input_size(ViTImageProcessor(size={"shortest_edge": 32}))
    assert info.value.setting == "do_center_crop"


def test_cli_extract_prints_one_line_and_writes_nothing(tmp_path, sample_images, capsys):
    from attn_assets.cli import EXIT_OK, main

    directory = _save(tmp_path / "bad_model", _clip(224, 32), make_clip_processor(192))
    out = tmp_path / "out.parquet"
    capsys.readouterr()  # drop save_pretrained's progress output
    code = main(["extract", "--model", str(directory), "--out", str(out), "--device", "cpu", "--quiet",
                 "--num-workers", "0", str(sample_images["square_300.png"])])
    captured = capsys.readouterr()
    assert code != EXIT_OK and not out.exists()
    lines = captured.err.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"attn-assets: error: cannot use the model folder {directory}")
    assert "Traceback" not in captured.err + captured.out


def test_register_share_flows_to_the_warehouse(layout_models, six_images, tmp_path):
    """extract_records(analyses=True) -> shard Parquet -> attention_statistics.register_attention_share.

    The shard step collects the per-batch analyses by name (ShardAnalyses) and the warehouse copies
    the shard's columns by name, so the value arrives unchanged; NULL for a model without registers.
    """
    from datetime import datetime, timezone

    from attn_assets.passes.statistics import ShardAnalyses
    from attn_assets.storage.parquet import build_shard_results, write_table_atomic
    from attn_assets.storage.warehouse import Warehouse

    records = [ImageRecord(f"img{i}", str(p)) for i, p in enumerate(six_images[:3])]
    shards, expected = {}, {}
    for shard_key, name in (("with_registers", "dinov2_registers"), ("without", "dinov2")):
        encoder = load_encoder(str(layout_models[name][0]))
        ids = [f"{shard_key}-{r.image_id}" for r in records]
        (result,) = list(extract_records(encoder, records, batch_size=3, num_workers=0, analyses=True))
        analyses = ShardAnalyses()
        analyses.add(result.analyses)
        table = build_shard_results(
            shard_key=shard_key, image_ids=ids, paths=[r.path for r in records], countries=["NA"] * 3,
            metrics=result.metrics, cls_maps=result.cls_maps, cls_embeddings=result.cls_embedding,
            image_sizes=result.image_sizes, crop_boxes=result.crop_boxes, failures=[], model_spec=name,
            precision=result.precision, computed_at=datetime.now(timezone.utc), analyses=analyses.merged(3),
        )
        shards[shard_key] = write_table_atomic(table, tmp_path / f"{shard_key}.parquet")
        expected.update(zip(ids, result.register_attention_share))
    warehouse = Warehouse(tmp_path / "attention.duckdb")
    warehouse.sync_shards(shards)
    rows = warehouse.query("SELECT image_id, register_attention_share AS share, num_patches FROM attention_statistics "
                           "WHERE shard_key = 'with_registers'")
    assert len(rows) == 3 and set(rows.num_patches) == {64}
    for image_id, share in zip(rows.image_id, rows.share):
        assert share == expected[image_id]  # float64 written and read back unchanged
    nulls = warehouse.query("SELECT count(*) AS n FROM attention_statistics "
                            "WHERE shard_key = 'without' AND register_attention_share IS NULL")
    assert int(nulls.n.iloc[0]) == 3  # SQL NULL, not NaN, for a model without registers


def test_multimodal_processor_is_checked_through_its_image_processor(tiny_model_dir, tmp_path):
    """PLONK hands over a CLIPProcessor (tokenizer + image processor): its settings are the image processor's."""
    from transformers import CLIPProcessor, CLIPTokenizer

    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab.write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    merges.write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(vocab), merges_file=str(merges))
    model = load_encoder(str(tiny_model_dir)).model
    good = CLIPProcessor(image_processor=make_clip_processor(48), tokenizer=tokenizer)
    encoder = describe_encoder(model, good, "plonk-like")
    assert encoder.grid_size == (6, 6) and Preprocessor(good).fast
    assert Preprocessor(good).crop_geometry(792, 512).box_in_original()[1] == 0
    with pytest.raises(ModelLoadError, match="crop_size makes 40x40 inputs, but CLIPVisionModel expects 48x48"):
        describe_encoder(model, CLIPProcessor(image_processor=make_clip_processor(40), tokenizer=tokenizer), "bad")


@pytest.mark.parametrize("key, value, part", [
    ("image_mean", [123.675, 116.28, 103.53], "image_mean [123.675, 116.28, 103.53] is not 3 (or 1) numbers in [0, 1]"),
    ("image_std", [0.2, 0.0, 0.2], "image_std [0.2, 0.0, 0.2] is not 3 (or 1) numbers in (0, 1]"),
    ("image_mean", [0.5, 0.5], "image_mean [0.5, 0.5] is not 3 (or 1) numbers"),
    ("rescale_factor", 1.0, "rescale_factor is 1.0, not 1/255"),
])
def test_normalization_on_the_wrong_scale_is_refused(tmp_path, key, value, part):
    directory = _save(tmp_path, _dinov2(), _bit_processor(36, 32))
    settings_file = directory / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text())
    settings[key] = value
    settings_file.write_text(json.dumps(settings))
    message = _refusal(directory)
    assert f"{settings_file} {part}" in message, message

"""The demo model: a small CLIP model (vision and text tower, character-level tokenizer) trained on demo scenes.

What it is: a ``transformers.CLIPModel`` in StreetCLIP's format (``config.json``, ``model.safetensors``, a
CLIP tokenizer and a ``CLIPImageProcessor`` with a shortest-edge resize, a centre crop and CLIP's mean/std), so
every part of the pipeline and zero-shot country classification run on it unchanged. It is trained on freshly
drawn demo scenes (`attn_assets.catalog.demo_data.draw_example`, both scene variants, the demo's image sizes,
seeds the demo set never uses) through its own image processor, with one loss: cross-entropy of
``logit_scale * cos(image embedding, caption embedding)`` over the nine demo countries' captions
(`CAPTION_TEMPLATES`: "A Street View photo in France." and the bare "France", in turn) against the true country
(CLIP's zero-shot classifier, Radford et al. 2021, trained as a classifier).
The sign boxes and attention never enter training: where the model looks is measured after training, not taught.

What it is not: a geolocation model. It has seen nothing but the demo's drawings and knows nine countries.

Run (the command that made ``models/demo``; CPU, 2 threads: 40 s to draw the scenes, 9 minutes to train)::

    python -m attn_assets.training.demo_model --out models/demo
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attn_assets.catalog.demo_data import SCENE_VARIANTS, STYLES, Box, demo_image_size, draw_example
from attn_assets.core.extract import AttentionExtractor
from attn_assets.core.model import describe_encoder, make_clip_processor
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.zero_shot import everyday_country_name

#: The countries the demo model tells apart, in label order (the demo set's order).
COUNTRIES: tuple[str, ...] = tuple(style.code for style in STYLES)
#: The caption templates the text tower is trained on, in turn from step to step: a sentence, and the bare name
#: (zero-shot classification's default template, ``core.zero_shot.DEFAULT_TEMPLATE``).
CAPTION_TEMPLATES: tuple[str, ...] = ("A Street View photo in {}.", "{}")
#: Caption tokens the text tower can take: <|startoftext|>, at most one token per character, <|endoftext|>.
MAX_TEXT_TOKENS = 64
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class ModelShape:
    """Sizes of the demo CLIPModel. Vision: ``image`` px crops cut into ``patch`` px patches (a 14 x 14 grid)."""

    image: int = 224
    patch: int = 16
    vision_hidden: int = 64
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    projection: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``pool`` scenes are drawn once (``sign_only_share`` of them sign_only) and sampled
    ``steps`` times in batches of ``batch_size``; AdamW at ``lr`` with linear warm-up and cosine decay."""

    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 40
    pool: int = 4000
    sign_only_share: float = 0.7
    heldout: int = 360
    checkpoint_every: int = 250
    stop_at: int = 0  # stop after this many steps of the ``steps``-long schedule (0: run it to the end)


@dataclass(frozen=True)
class Example:
    """One drawn scene: the image, its country's label (index in `COUNTRIES`), scene variant and cue box."""

    image: Image.Image
    label: int
    variant: str
    cue_box: Box | None


# --------------------------------------------------------------------------- captions, tokenizer, model


def country_captions(template: str = CAPTION_TEMPLATES[0], codes: Sequence[str] = COUNTRIES) -> list[str]:
    """The zero-shot captions, e.g. "A Street View photo in Namibia." (everyday names, as zero-shot
    classification writes them: ``core.zero_shot.everyday_country_name``)."""
    return [template.format(everyday_country_name(code)) for code in codes]


def character_vocabulary() -> dict[str, int]:
    """CLIP's byte-level alphabet (256 symbols), each also as a word end (``x</w>``), then BOS and EOS: with no
    BPE merges, CLIP's tokenizer then splits every word into its characters."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def build_tokenizer():
    """A character-level ``CLIPTokenizer`` built offline (no merges); pads with EOS, as CLIP does."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=character_vocabulary(), merges=[], model_max_length=MAX_TEXT_TOKENS)


def build_model(shape: ModelShape, tokenizer, seed: int):
    """An untrained ``CLIPModel`` of ``shape`` whose text tower pools at the tokenizer's EOS; seeded, without
    touching the global RNG."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=len(tokenizer), hidden_size=shape.text_hidden, intermediate_size=4 * shape.text_hidden,
                num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
                max_position_embeddings=MAX_TEXT_TOKENS, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=shape.vision_hidden, intermediate_size=4 * shape.vision_hidden,
                  num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                  image_size=shape.image, patch_size=shape.patch)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=shape.projection)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


# --------------------------------------------------------------------------- data


def draw_examples(namespace: str, count: int, sign_only_share: float) -> list[Example]:
    """``count`` scenes seeded by ``namespace`` and their index: a random country, ``sign_only`` with probability
    ``sign_only_share``, and the size of a random demo image (see `demo_image_size`)."""
    examples = []
    for k in range(count):
        rng = random.Random(f"demo-model:{namespace}:{k}")
        label = rng.randrange(len(COUNTRIES))
        variant = "sign_only" if rng.random() < sign_only_share else "styled"
        width, height = demo_image_size(rng.randrange(12), rng)
        image, box = draw_example(label, variant, width, height, rng)
        examples.append(Example(image, label, variant, box))
    return examples


def pixel_values(examples: Sequence[Example], preprocess: Preprocessor) -> torch.Tensor:
    """``[N, 3, H, W]`` float32 through the model's image processor (`Preprocessor` reproduces it exactly)."""
    return torch.stack([preprocess(example.image) for example in examples])


# --------------------------------------------------------------------------- zero-shot classification


def caption_embeddings(model, tokenizer, captions: Sequence[str]) -> torch.Tensor:
    """``[C, projection]`` unit-norm caption embeddings (text tower, EOS pooling, text projection)."""
    tokens = tokenizer(list(captions), padding=True, return_tensors="pt")
    pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    return F.normalize(model.text_projection(pooled), dim=-1)


def image_embeddings(model, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, projection]`` unit-norm image embeddings (vision tower's pooled CLS, visual projection)."""
    return F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)


def zero_shot_logits(model, image_embeds: torch.Tensor, caption_embeds: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` = ``exp(logit_scale) * cos`` (CLIP's logits; the scale is capped at 100 as in CLIP)."""
    return model.logit_scale.exp().clamp(max=100.0) * image_embeds @ caption_embeds.T


def classification_loss(model, tokenizer, pixels: torch.Tensor, labels: torch.Tensor,
                        template: str = CAPTION_TEMPLATES[0]) -> torch.Tensor:
    """The only training loss: cross-entropy of the zero-shot logits (captions of ``template``) against the true
    country."""
    captions = caption_embeddings(model, tokenizer, country_captions(template))
    return F.cross_entropy(zero_shot_logits(model, image_embeddings(model, pixels), captions), labels)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``config.warmup`` steps, then cosine decay to 0 at ``config.steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(config: TrainConfig, shape: ModelShape = ModelShape(), report: Callable[[str], None] = print,
          checkpoint: Callable[[object, object, object], None] | None = None):
    """Train a demo model; returns ``(model, tokenizer, processor)`` with the model in eval mode.

    ``checkpoint(model, tokenizer, processor)`` is called every ``config.checkpoint_every`` steps (e.g. to save).
    ``config.stop_at`` ends training early without changing the learning-rate schedule (a checkpoint's weights).

    Seeded by ``config.seed`` (scenes, initial weights, batch order); results are reproducible to the accuracy
    they reach, not bit for bit across thread counts.
    """
    tokenizer = build_tokenizer()
    processor = make_clip_processor(shape.image)
    model = build_model(shape, tokenizer, config.seed)
    started = time.perf_counter()
    pool = draw_examples(f"train:{config.seed}", config.pool, config.sign_only_share)
    pixels = pixel_values(pool, Preprocessor(processor))
    labels = torch.tensor([example.label for example in pool])
    del pool  # the drawn images (about 1 MB each); training reads the pixel values
    report(f"drew and preprocessed {len(labels)} training scenes in {time.perf_counter() - started:.0f} s")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    for step in range(config.stop_at or config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        batch = torch.randint(len(labels), (config.batch_size,), generator=generator)
        template = CAPTION_TEMPLATES[step % len(CAPTION_TEMPLATES)]
        loss = classification_loss(model, tokenizer, pixels[batch], labels[batch], template)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == config.steps - 1:
            report(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
        if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            checkpoint(model, tokenizer, processor)
    return model.eval(), tokenizer, processor


# --------------------------------------------------------------------------- evaluation


def box_in_crop(box: Box, width: int, height: int, preprocess: Preprocessor) -> tuple[float, float, float, float]:
    """``box`` (original pixels) in the model's input pixels: scaled by the resize, shifted by the crop offset."""
    geometry = preprocess.crop_geometry(width, height)
    x0, y0, x1, y1 = box
    return (x0 * geometry.scale_x - geometry.left, y0 * geometry.scale_y - geometry.top,
            x1 * geometry.scale_x - geometry.left, y1 * geometry.scale_y - geometry.top)


def cells_on_box(grid: tuple[int, int], patch: int, box: tuple[float, float, float, float]) -> int:
    """How many patch cells overlap ``box`` (input pixels) with positive area: a uniformly random arg-max hits
    with probability ``cells_on_box / (grid_h * grid_w)`` (the pointing game's chance level for that image)."""
    cols = sum(min(box[2], (c + 1) * patch) > max(box[0], c * patch) for c in range(grid[1]))
    rows = sum(min(box[3], (r + 1) * patch) > max(box[1], r * patch) for r in range(grid[0]))
    return int(cols * rows)


def pointing_hit(cls_attention: np.ndarray, grid: tuple[int, int], patch: int,
                 box: tuple[float, float, float, float]) -> bool:
    """The pointing game (Zhang et al. 2016) on a patch map: True when the arg-max patch's cell
    ``[c * patch, (c + 1) * patch) x [r * patch, (r + 1) * patch)`` overlaps ``box`` (input pixels) with
    positive area. ``cls_attention`` is ``[grid_h * grid_w]``, row-major."""
    row, col = divmod(int(np.argmax(cls_attention)), grid[1])
    return (min(box[2], (col + 1) * patch) > max(box[0], col * patch)
            and min(box[3], (row + 1) * patch) > max(box[1], row * patch))


@torch.inference_mode()
def evaluate(model, tokenizer, processor, examples: Sequence[Example], batch_size: int = 64) -> dict:
    """Held-out zero-shot accuracy per caption template and scene variant and, on sign_only scenes, the
    pointing-game rate of the head-averaged CLS attention of every layer (extracted by the pipeline's own
    `AttentionExtractor`).

    Returns ``{"accuracy": {template: {variant: rate}}, "images": {variant: count}, "pointing_game": [rate per
    layer, first to last], "pointing_game_chance": mean share of cells on the box}``.
    """
    preprocess = Preprocessor(processor)
    encoder = describe_encoder(model, processor, "demo (training)")
    extractor = AttentionExtractor(encoder, device="cpu", precision="fp32", layers="all")
    captions = {t: caption_embeddings(model, tokenizer, country_captions(t)) for t in CAPTION_TEMPLATES}
    correct = {(t, variant): [] for t in CAPTION_TEMPLATES for variant in SCENE_VARIANTS}
    hits: list[list[bool]] = []
    chance: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        pixels = pixel_values(chunk, preprocess)
        embeds = image_embeddings(model, pixels)
        predicted = {t: zero_shot_logits(model, embeds, c).argmax(dim=-1).tolist() for t, c in captions.items()}
        maps = extractor(pixels).head_mean().numpy()  # [B, layers, patches]
        for i, (example, layer_maps) in enumerate(zip(chunk, maps)):
            for t in CAPTION_TEMPLATES:
                correct[t, example.variant].append(predicted[t][i] == example.label)
            if example.variant == "sign_only" and example.cue_box is not None:
                box = box_in_crop(example.cue_box, *example.image.size, preprocess)
                hits.append([pointing_hit(m, encoder.grid_size, encoder.patch_size, box) for m in layer_maps])
                chance.append(cells_on_box(encoder.grid_size, encoder.patch_size, box) / encoder.num_patches)
    return {
        "accuracy": {t: {v: float(np.mean(correct[t, v])) if correct[t, v] else float("nan") for v in SCENE_VARIANTS}
                     for t in CAPTION_TEMPLATES},
        "images": {v: len(correct[CAPTION_TEMPLATES[0], v]) for v in SCENE_VARIANTS},
        "pointing_game": np.mean(hits, axis=0).tolist() if hits else [],
        "pointing_game_chance": float(np.mean(chance)) if chance else float("nan"),
    }


def evaluate_folder(folder: Path, heldout: int) -> dict:
    """`evaluate` on ``heldout`` held-out scenes, the model loaded from ``folder`` by the pipeline's zero-shot
    loader (``core.zero_shot.load_clip_classifier``: the same checks as ``load_encoder``)."""
    from attn_assets.core.zero_shot import load_clip_classifier

    encoder, model, tokenizer = load_clip_classifier(str(folder))
    return evaluate(model, tokenizer, encoder.processor, heldout_examples(heldout))


def heldout_examples(count: int, sign_only_share: float = 0.5) -> list[Example]:
    """The held-out scenes: a seed namespace that training never draws from."""
    return draw_examples("heldout", count, sign_only_share)


# --------------------------------------------------------------------------- saving and the command line


def save(folder: Path, model, tokenizer, processor) -> None:
    """Write the model folder: config.json, model.safetensors, the tokenizer and preprocessor_config.json.
    vocab.json and merges.txt (empty: no merges) are written too, for transformers versions that read those."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(character_vocabulary(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    defaults, default_shape = TrainConfig(), ModelShape()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/demo)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the model in --out (loaded as the pipeline loads it) instead of training")
    for name, value in {**asdict(defaults), **asdict(default_shape)}.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    if args.evaluate_only:
        print(json.dumps(evaluate_folder(args.out, args.heldout), indent=2))
        return 0
    config = TrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    shape = ModelShape(**{name: getattr(args, name) for name in asdict(default_shape)})
    started = time.perf_counter()
    model, tokenizer, processor = train(config, shape, checkpoint=lambda *parts: save(args.out, *parts))
    trained_s = time.perf_counter() - started
    save(args.out, model, tokenizer, processor)
    result = evaluate(model, tokenizer, processor, heldout_examples(config.heldout))
    result.update(train_seconds=round(trained_s, 1), threads=torch.get_num_threads(), config=asdict(config),
                  shape=asdict(shape),
                  parameters=sum(p.numel() for p in model.parameters()))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

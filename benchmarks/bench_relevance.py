"""What zero-shot country classification, relevance maps and a faithfulness curve cost relative to the base
statistics' forward pass.

Methods, same model and images, one process, preprocessing untimed:
  base            attention_statistics' forward: last-layer CLS-row capture + six metrics (AttentionExtractor)
  classify        zero-shot country logits: the vision tower + projection against text embeddings computed once
  relevance_2     relevance maps for the predicted and the true country (Chefer et al. 2021): one eager forward
                  keeping every layer's attention in the graph, two backward passes to the attention probabilities
  curve_1         ONE deletion curve of 11 steps (0, 10%, ..., 100% of the patches): 11 classifier forwards per image

Each line reports time / base. The issue's goal: relevance_2 <= 4x base. The machine is noisy: methods alternate
(rotating order) over --repeats and medians are used.

The model is a randomly initialised CLIPModel (seeded) with a vision tower of the named shape and a small text
tower; cost is set by the vision tower, the text embeddings are computed once outside the timed region.

    python benchmarks/bench_relevance.py --shape vit-b16 --images 8 --repeats 3
    python benchmarks/bench_relevance.py --shape streetclip --images 8 --batch-size 8 --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attn_assets.core.extract import AttentionExtractor
from attn_assets.core.faithfulness import curve_fractions, fill_for, probability_curves, random_order
from attn_assets.core.metrics import attention_metrics
from attn_assets.core.model import RANDOM_SHAPES, describe_encoder, make_clip_processor, resolve_device
from attn_assets.core.relevance import relevance_maps
from attn_assets.core.zero_shot import CountryPrompts, ZeroShotClassifier

COUNTRIES = ("FR", "DE", "US", "JP", "BR", "IN", "ZA", "AU", "CA", "MX")


def byte_tokenizer():
    """A character-level CLIP tokenizer built offline (GPT-2's byte table, no merges)."""
    from transformers import CLIPTokenizer

    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codes]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def random_clip(shape: str, device: torch.device):
    from transformers import CLIPConfig, CLIPModel

    hidden, layers, heads, intermediate, patch, image = RANDOM_SHAPES[shape]
    tokenizer = byte_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
                pad_token_id=len(tokenizer) - 1)
    vision = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, patch_size=patch, image_size=image, hidden_act="quick_gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=min(hidden, 768)))
    model = model.to(device).eval()
    encoder = describe_encoder(model, make_clip_processor(image), f"random-clip:{shape}")
    return encoder, model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="vit-b16", choices=sorted(RANDOM_SHAPES))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    encoder, model, tokenizer = random_clip(args.shape, device)
    classifier = ZeroShotClassifier(encoder, model, tokenizer, CountryPrompts.from_codes(COUNTRIES), args.precision)
    extractor = AttentionExtractor(encoder, precision=args.precision)
    generator = torch.Generator().manual_seed(0)
    h, w = encoder.input_size
    batches = [torch.randn(min(args.batch_size, args.images - s), 3, h, w, generator=generator)
               for s in range(0, args.images, args.batch_size)]
    truths = [torch.randint(0, len(COUNTRIES), (len(b),), generator=generator) for b in batches]
    ids = [[f"img{s}_{i}" for i in range(len(b))] for s, b in enumerate(batches)]
    fractions = curve_fractions(10)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def base():
        for pixels in batches:
            attention_metrics(extractor(pixels.to(device)).last_layer_map())

    def classify():
        with torch.no_grad():
            for pixels in batches:
                classifier.logits(pixels.to(device))

    def relevance_2():
        for pixels, truth in zip(batches, truths):
            relevance_maps(classifier, pixels, [None, truth])

    def curve_1():
        for pixels, truth, names in zip(batches, truths, ids):
            pixels = pixels.to(device)
            probability_curves(classifier.probabilities, pixels, random_order(names, encoder.num_patches), truth,
                               "deletion", fill_for(pixels, "mean", encoder.patch_size), encoder.grid_size,
                               encoder.patch_size, fractions, chunk=args.batch_size)

    methods = {"base": base, "classify": classify, "relevance_2": relevance_2, "curve_1": curve_1}
    for method in methods.values():  # warm-up
        method()
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            sync()
            started = time.perf_counter()
            methods[name]()
            sync()
            times[name].append(time.perf_counter() - started)
    base_time = statistics.median(times["base"])
    print(f"shape {args.shape} ({encoder.num_layers} layers, {encoder.num_patches} patches), {args.images} images, "
          f"batch {args.batch_size}, {device} {args.precision}, {args.repeats} repeats (medians)")
    for name in names:
        median = statistics.median(times[name])
        print(f"  {name:12s} {1000 * median / args.images:9.1f} ms/image   {median / base_time:6.2f} x base")


if __name__ == "__main__":
    main()

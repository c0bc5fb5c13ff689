"""attn_assets.training.demo_model: the training script runs, and the committed demo model has learned its cue."""

from __future__ import annotations

import torch

from attn_assets.core.model import load_encoder
from attn_assets.core.preprocess import Preprocessor
from attn_assets.core.zero_shot import load_clip_classifier, text_embeddings
from attn_assets.training.demo_model import (
    CAPTION_TEMPLATES,
    COUNTRIES,
    MAX_TEXT_TOKENS,
    ModelShape,
    TrainConfig,
    build_model,
    build_tokenizer,
    classification_loss,
    country_captions,
    draw_examples,
    main,
    pixel_values,
    train,
)

TINY = ModelShape(vision_hidden=32, vision_layers=2, vision_heads=2, text_hidden=32, text_layers=1, text_heads=2,
                  projection=16)


def test_character_tokenizer_fits_every_caption():
    tokenizer = build_tokenizer()
    for template in CAPTION_TEMPLATES:
        for caption in country_captions(template):
            ids = tokenizer(caption)["input_ids"]
            assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
            assert len(ids) <= MAX_TEXT_TOKENS, caption
            assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == caption.lower().replace(" ", "")


def test_a_few_training_steps_lower_the_loss_on_their_scenes():
    config = TrainConfig(steps=6, batch_size=8, pool=16, warmup=1, lr=3e-3, heldout=0)
    model, tokenizer, processor = train(config, TINY, report=lambda line: None)
    scenes = draw_examples(f"train:{config.seed}", config.pool, config.sign_only_share)  # the pool train() drew
    pixels = pixel_values(scenes, Preprocessor(processor))
    labels = torch.tensor([scene.label for scene in scenes])
    untrained = build_model(TINY, tokenizer, config.seed).eval()  # train()'s starting weights (same seed)
    with torch.no_grad():
        before = classification_loss(untrained, tokenizer, pixels, labels).item()
        after = classification_loss(model, tokenizer, pixels, labels).item()
    assert after < before


def test_the_script_writes_a_folder_the_pipeline_loads(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--steps", "2", "--batch-size", "4", "--pool", "8", "--warmup", "1", "--heldout", "6"]
    for name, value in vars(TINY).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    assert main(args) == 0
    assert '"pointing_game"' in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    encoder = load_encoder(str(out))
    assert encoder.grid_size == (14, 14) and encoder.num_layers == TINY.vision_layers
    _, clip, tokenizer = load_clip_classifier(str(out))
    from transformers import CLIPProcessor

    assert CLIPProcessor.from_pretrained(out).tokenizer("France")["input_ids"] == tokenizer("France")["input_ids"]
    assert text_embeddings(clip, tokenizer, country_captions()).shape == (len(COUNTRIES), TINY.projection)

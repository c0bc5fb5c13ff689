"""attn_assets.training.demo_model: the training script runs, lowers its loss and writes a folder the pipeline loads."""

from __future__ import annotations

import numpy as np
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


def test_pointing_hit_and_its_chance_level_on_a_known_cell():
    from attn_assets.training.demo_model import cells_on_box, pointing_hit

    grid, patch = (14, 14), 16
    box = (2 * 16 + 4, 16 + 4, 3 * 16 - 4, 2 * 16 - 4)  # inside cell row 1, column 2
    peak = np.zeros(grid)
    peak[1, 2] = 1.0
    assert pointing_hit(peak.reshape(-1), grid, patch, box)
    assert not pointing_hit(peak.T.reshape(-1), grid, patch, box)  # a transposed map points at row 2, column 1
    assert cells_on_box(grid, patch, box) == 1
    assert cells_on_box(grid, patch, (16.0, 16.0, 48.0, 32.0)) == 2  # touching edges do not count

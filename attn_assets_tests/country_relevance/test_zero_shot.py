"""Zero-shot country classification: loading, captions, and agreement with CLIPModel's own logits_per_image."""

from __future__ import annotations

import pytest
import torch

from attn_assets.core.model import ModelLoadError
from attn_assets.core.zero_shot import (
    DEFAULT_COUNTRY_CODES,
    CountryPrompts,
    TextTowerMissing,
    country_predictions,
    everyday_country_name,
    load_clip_classifier,
)

from .conftest import TINY_COUNTRIES


def test_default_list_has_everyday_names():
    prompts = CountryPrompts.from_codes()
    assert len(prompts.codes) == len(DEFAULT_COUNTRY_CODES) == 246
    formal = [(c, n) for c, n in zip(prompts.codes, prompts.names) if "," in n or "(" in n or "Federation" in n]
    assert formal == []
    assert everyday_country_name("KR") == "South Korea" and everyday_country_name("xk") == "Kosovo"
    assert prompts.captions[prompts.codes.index("FR")] == "France"  # template "{}": StreetCLIP's model card


def test_identity_changes_with_list_and_template():
    base = CountryPrompts.from_codes(TINY_COUNTRIES)
    assert base.fingerprint == CountryPrompts.from_codes(list(TINY_COUNTRIES)).fingerprint
    assert base.fingerprint != CountryPrompts.from_codes(TINY_COUNTRIES[:-1]).fingerprint
    assert base.fingerprint != CountryPrompts.from_codes(TINY_COUNTRIES, "A Street View photo in {}.").fingerprint


@pytest.mark.parametrize("codes, template, words", [
    ((), "{}", "empty"), (("FR", "FR"), "{}", "repeats"), (("FR", "ZZ"), "{}", "'ZZ'"), (("FR",), "photo", "{}")])
def test_bad_prompts_are_refused(codes, template, words):
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        CountryPrompts.from_codes(codes, template).captions


def test_vision_only_specs_are_refused(tiny_model_dir):
    for spec in ("random:tiny", str(tiny_model_dir)):
        with pytest.raises(TextTowerMissing, match="text tower.*statistics keep working"):
            load_clip_classifier(spec)


def test_missing_tokenizer_is_named(tiny_clip_dir, tmp_path):
    import shutil

    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(tiny_clip_dir / name, folder / name)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_clip_classifier(str(folder))


def test_logits_equal_clipmodel_logits_per_image(tiny_classifier, tiny_clip_dir):
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = CLIPTokenizer.from_pretrained(tiny_clip_dir)
    pixels = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(list(tiny_classifier.prompts.captions), padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(pixel_values=pixels, **tokens).logits_per_image
        got = tiny_classifier.logits(pixels)
    # float32, the same operations in another grouping: logits ~30 * cos, rounding ~1e-6 relative
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_country_predictions_ranks():
    probabilities = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    out = country_predictions(probabilities, torch.tensor([2, -1]), k=2)
    assert out["predicted_index"].tolist() == [1, 0]
    assert out["top_indices"].tolist() == [[1, 2], [0, 2]]
    assert out["true_rank"].tolist() == [2, 0]
    assert out["true_probability"][0] == pytest.approx(0.3) and torch.isnan(out["true_probability"][1])

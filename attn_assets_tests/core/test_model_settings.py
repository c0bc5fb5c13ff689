"""Model folders whose settings load in transformers but fail (or go silently wrong) later: refused at load.

Found by an adversarial tester after the first round of real-world inputs: each case is a real model folder
(the tiny CLIP saved with save_pretrained, then one setting edited in its JSON file) and the exact one-line
ModelLoadError that names the file and the setting. Garbage weights show that each refusal is decided before
any weights are read. A folder with a non-UTF-8 (Latin-1) name is refused with its escaped name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from attn_assets.core.model import ModelLoadError, describe_encoder, load_encoder, make_clip_processor
from attn_assets.core.preprocess import ProcessorSizeError, processor_input_size
from attn_assets_tests.conftest import street_scene


def _copy(tiny_model_dir: Path, target: Path, file: str | None = None, **changes) -> Path:
    shutil.copytree(tiny_model_dir, target)
    if file:
        settings_file = target / file
        settings = json.loads(settings_file.read_text())
        settings.update(changes)
        settings_file.write_text(json.dumps(settings))
    return target


def _refusal(directory: Path) -> str:
    """The refusal's text after "cannot use the model folder <dir>: ", with the folder written as DIR."""
    (directory / "model.safetensors").write_bytes(b"not safetensors")  # decided before any weights are read
    with pytest.raises(ModelLoadError) as info:
        load_encoder(str(directory))
    message = str(info.value)
    prefix = f"cannot use the model folder {directory}: "
    assert "\n" not in message and message.startswith(prefix), message
    return message[len(prefix):].replace(str(directory), "DIR")


def test_the_unchanged_tiny_folder_loads(tiny_model_dir, tmp_path):
    """The control: the copies below differ from a folder that loads by one setting each."""
    encoder = load_encoder(str(_copy(tiny_model_dir, tmp_path / "m")))
    assert encoder.input_size == (48, 48) and encoder.grid_size == (6, 6)


PROCESSOR_CASES = {
    # a cap on the long edge: a wide photo is shrunk below the 48 crop and padded; its crop box is unknown
    "longest_edge": ({"size": {"shortest_edge": 48, "longest_edge": 56}},
                     'DIR/preprocessor_config.json setting size.longest_edge: size.longest_edge 56 limits the resize '
                     "in a way that depends on each photo (a wide or tall photo is shrunk further and the 48x48 crop "
                     "padded with black), and where the model's view lies in the photo could not be known; this "
                     "project resizes to size.shortest_edge, or to size.height and size.width. Give "
                     "DIR/preprocessor_config.json a centre crop the model can take"),
    # the resize-smaller-than-crop check no longer skips a processor that also sets longest_edge
    "short_with_longest": ({"size": {"shortest_edge": 40, "longest_edge": 56}},
                           "DIR/preprocessor_config.json setting size: size.shortest_edge 40 is smaller than crop_size "
                           "48x48: every image would be padded with black before the model sees it"),
    "longest_only": ({"size": {"longest_edge": 64}},
                     "DIR/preprocessor_config.json setting size.longest_edge: size.longest_edge 64 limits the resize"),
    "max_height": ({"size": {"max_height": 64, "max_width": 96}},
                   "DIR/preprocessor_config.json setting size.max_height: size.max_height 64 limits the resize"),
    "resample_unknown": ({"resample": 99},
                         "DIR/preprocessor_config.json resample is 99, not a PIL resampling filter (0 nearest, "
                         "1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming"),
    "resample_text": ({"resample": "bicubic"}, 'DIR/preprocessor_config.json resample is "bicubic", not a PIL '
                                                "resampling filter"),
    "rescale_text": ({"rescale_factor": "0.00392156862745098"},
                     'DIR/preprocessor_config.json rescale_factor is "0.00392156862745098", not a number. Write '
                     '"rescale_factor": 0.00392156862745098 in DIR/preprocessor_config.json, without quotes'),
    "mean_text": ({"image_mean": ["0.48145466", "0.4578275", "0.40821073"]},
                  'DIR/preprocessor_config.json image_mean ["0.48145466", "0.4578275", "0.40821073"] is not 3 (or 1) '
                  "numbers in [0, 1]"),
    "flag_text": ({"do_resize": "false"}, 'DIR/preprocessor_config.json do_resize is "false", not true or false. '
                                           "Write do_resize in DIR/preprocessor_config.json as true or false, "
                                           "without quotes"),
    "size_text": ({"size": {"shortest_edge": "48"}},
                  'DIR/preprocessor_config.json setting size.shortest_edge: size.shortest_edge "48" is not a positive '
                  "whole number of pixels"),
    "crop_zero": ({"crop_size": {"height": 0, "width": 48}},
                  "DIR/preprocessor_config.json setting crop_size.height: crop_size.height 0 is not a positive whole "
                  "number of pixels"),
    # no resize before the crop: a 48x48 crop of a 4000-px photo at its own resolution
    "crop_without_resize": ({"do_resize": False},
                            "DIR/preprocessor_config.json setting do_resize: do_resize is false but do_center_crop is "
                            "true: the model would see a 48x48 crop of each photo at its own resolution (a small part "
                            "of a large photo, black padding around a small one)"),
}


@pytest.mark.parametrize("case", sorted(PROCESSOR_CASES))
def test_processor_settings_that_fail_later_are_refused_at_load(tiny_model_dir, tmp_path, case):
    changes, expected = PROCESSOR_CASES[case]
    directory = _copy(tiny_model_dir, tmp_path / case, "preprocessor_config.json", **changes)
    message = _refusal(directory)
    assert message.startswith(expected), message


@pytest.mark.parametrize("changes, expected", [
    ({"num_attention_heads": 5},
     "DIR/config.json setting num_attention_heads: The hidden size (64) is not a multiple of the number of attention "
     "heads (5). Fix num_attention_heads in DIR/config.json (use the config.json saved with these weights)"),
    ({"hidden_size": "64"},
     "DIR/config.json setting hidden_size: Field 'hidden_size' expected int, got str (value: '64'). Fix hidden_size "
     "in DIR/config.json (use the config.json saved with these weights)"),
    ({"patch_size": 0},
     "DIR/config.json patch_size is 0, not a positive number of pixels. Use the config.json saved with these weights"),
], ids=["heads", "hidden_text", "patch_zero"])
def test_config_settings_transformers_refuses_name_config_json(tiny_model_dir, tmp_path, changes, expected):
    directory = _copy(tiny_model_dir, tmp_path / "m", "config.json", **changes)
    assert _refusal(directory) == expected


def test_in_memory_processors_are_checked_the_same(tiny_encoder):
    """The notebook path (describe_encoder) and processor_input_size see the same settings."""
    processor = make_clip_processor(48)
    processor.resample = 99
    with pytest.raises(ModelLoadError, match=r"^cannot use spec 'notebook': the image processor resample is 99, not a "
                                             r"PIL resampling filter"):
        describe_encoder(tiny_encoder.model, processor, "notebook")
    processor = make_clip_processor(48)
    processor.size = {"shortest_edge": 48, "longest_edge": 56}
    with pytest.raises(ProcessorSizeError) as info:
        processor_input_size(processor)
    assert info.value.setting == "size.longest_edge"


# --------------------------------------------------------------------------- a non-UTF-8 folder name


def _latin1_refusal(shown: str) -> str:
    return (f"cannot use the model folder '{shown}': its path is not valid UTF-8 (a Latin-1 name, shown with \\xNN "
            "for the bytes that are not UTF-8), and safetensors opens UTF-8 paths only. Rename the folder (and any "
            "folder above it with such a name) to a UTF-8 name, e.g. `convmv -f latin1 -t utf-8 -r --notest "
            "<folder>`, and set the model spec to the new path")


def test_model_folder_with_a_latin1_name_is_refused_with_its_escaped_name(tiny_model_dir, tmp_path):
    raw = os.path.join(os.fsdecode(tmp_path), os.fsdecode(b"mod\xe8le"))
    shutil.copytree(tiny_model_dir, raw)
    escaped = f"{tmp_path}/mod\\xe8le"
    for spec in (raw, escaped):  # the raw name, or the escaped text every table and log writes
        with pytest.raises(ModelLoadError) as info:
            load_encoder(spec)
        assert str(info.value) == _latin1_refusal(escaped)

    from attn_assets.cli import EXIT_USAGE, main

    image = tmp_path / "a.jpg"
    street_scene(64, 48, 0).save(image)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["extract", "--model", raw, "--out", str(tmp_path / "out.parquet"), "--device", "cpu",
                     "--quiet", str(image)])
    assert (code, out.getvalue()) == (EXIT_USAGE, "")
    assert err.getvalue() == f"attn-assets: error: {_latin1_refusal(escaped)}\n"
    assert not (tmp_path / "out.parquet").exists()

"""`attn-assets materialize` tells the truth: an unloadable model stops the run before any output, a failed step
shows its cause once with the log holding its trace, and every entry point sets up the same Dagster instance."""

from __future__ import annotations

import filecmp
import re

import dagster as dg
import pytest

from attn_assets import cli
from attn_assets import settings as S

# cmd_materialize writes these into the environment; registering them with monkeypatch restores them afterwards
_WRITTEN_BY_THE_CLI = (S.ENV_PROGRESS_BAR, S.ENV_MANIFEST, S.ENV_IMAGE_ROOT, S.ENV_MODEL, S.ENV_HOME)


@pytest.fixture
def restore_cli_env(monkeypatch):
    import os

    for name in (*_WRITTEN_BY_THE_CLI, "DAGSTER_HOME"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _model_without_weights(folder):
    """A model folder a user might point at by mistake: a config, no weights."""
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip_vision_model"}', encoding="utf-8")
    return folder


def test_unloadable_model_stops_before_any_output(pipeline_env, restore_cli_env, tmp_path, capsys):
    model = _model_without_weights(tmp_path / "no_weights")
    fresh_home = tmp_path / "fresh_dagster_home"  # does not exist yet
    restore_cli_env.setenv("HF_HUB_OFFLINE", "1")
    restore_cli_env.setenv("DAGSTER_HOME", str(fresh_home))

    code = cli.main(["materialize", "--model", str(model)])

    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == cli.EXIT_FAILED
    # the cause once, with what to do; no stage claims success, nothing ran
    assert sum("cannot be loaded" in line for line in lines) == 1, lines
    assert any("has no model weights" in line and str(model) in line for line in lines), lines
    assert any("ATTN_ASSETS_MODEL (or --model)" in line for line in lines), lines
    assert not [line for line in lines if re.search(r": ok\b", line)], lines
    assert "Traceback" not in captured.out + captured.err and "Stack Trace" not in captured.out + captured.err
    assert not pipeline_env.home.exists()  # no output touched: not even the manifest
    assert not fresh_home.exists()  # nor the Dagster instance: nothing is created before the model loads


def test_unloadable_model_on_a_fresh_default_home_creates_nothing(pipeline_env, restore_cli_env, tmp_path, capsys):
    """Without DAGSTER_HOME the instance would be $ATTN_ASSETS_HOME/dagster_home: the stop must not create it."""
    model = _model_without_weights(tmp_path / "no_weights")
    restore_cli_env.setenv("HF_HUB_OFFLINE", "1")
    restore_cli_env.delenv("DAGSTER_HOME", raising=False)
    home = tmp_path / "fresh_home"

    assert cli.main(["materialize", "--model", str(model), "--home", str(home)]) == cli.EXIT_FAILED

    out = capsys.readouterr().out
    assert "nothing was run and no output was touched" in out
    assert not home.exists()


def test_model_stop_prints_no_hub_retry_lines(pipeline_env, restore_cli_env, tmp_path, capfd, caplog):
    """huggingface_hub's http_backoff warns once per attempt on its module logger; the stop gives our one cause."""
    import logging

    from attn_assets.core.model import ModelLoadError
    from attn_assets.resources import AttentionModelResource

    def retrying_then_failing(self):
        hub_logger = logging.getLogger("huggingface_hub.utils._http")  # http_backoff's logger
        for attempt in range(1, 6):
            hub_logger.warning(f"Retrying in 8s [Retry {attempt}/5].")
        raise ModelLoadError("cannot reach the hub for 'someone/model'")

    restore_cli_env.setattr(AttentionModelResource, "encoder", retrying_then_failing)
    hub_root = logging.getLogger("huggingface_hub")
    level_before = hub_root.level
    caplog.set_level(logging.DEBUG)  # the root logger takes every record that is emitted

    assert cli.main(["materialize", "--model", "someone/model", "--home", str(tmp_path / "home")]) == cli.EXIT_FAILED

    captured = capfd.readouterr()
    assert "cannot reach the hub for 'someone/model'" in captured.out
    assert "Retry" not in captured.out + captured.err + caplog.text
    assert hub_root.level == level_before  # silenced during the check only
    hub_root.warning("after the check")  # its other warnings still show
    assert "after the check" in caplog.text


def test_failed_step_shows_its_cause_once_and_the_log_path(pipeline_env, restore_cli_env, capsys):
    pipeline_env.manifest.write_text("image_id,pth\na,a.jpg\n", encoding="utf-8")  # no path column

    assert cli.main(["materialize"]) == cli.EXIT_FAILED

    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    cause = "missing required column(s) 'path'"
    assert sum(cause in line for line in lines) == 1, lines
    assert lines[0].startswith("image_manifest: FAILED"), lines
    assert lines[1].startswith("  image_manifest failed: ManifestError: ")
    log = re.fullmatch(r"  full trace: (.+\.log) \(or --verbose\)", lines[2])
    assert log, lines
    trace = open(log.group(1), encoding="utf-8").read()
    assert "Stack Trace" in trace and cause in trace and "DagsterExecutionStepExecutionError" in trace
    assert log.group(1).startswith(str(pipeline_env.dagster_home))  # beside the runs, not among the outputs
    assert "Stack Trace" not in captured.out + captured.err

    assert cli.main(["materialize", "--verbose"]) == cli.EXIT_FAILED
    verbose = capsys.readouterr().out
    assert "    Stack Trace:" in verbose  # the full trace in the summary


def test_every_entry_point_sets_up_the_same_instance(pipeline_env, restore_cli_env, tmp_path, capsys):
    fresh_home = tmp_path / "ui_home"
    restore_cli_env.setenv("DAGSTER_HOME", str(fresh_home))
    assert cli.main(["ui", "--dry-run", "--port", "3999"]) == cli.EXIT_OK
    assert "dagster dev -w" in capsys.readouterr().err
    assert filecmp.cmp(fresh_home / "dagster.yaml", S.DAGSTER_YAML, shallow=False)
    with dg.DagsterInstance.from_config(str(fresh_home)) as instance:
        assert not instance.telemetry_enabled

    own = "telemetry:\n  enabled: false\n# mine\n"
    (fresh_home / "dagster.yaml").write_text(own, encoding="utf-8")
    assert cli.main(["ui", "--dry-run"]) == cli.EXIT_OK
    assert (fresh_home / "dagster.yaml").read_text(encoding="utf-8") == own  # never overwritten

    # without DAGSTER_HOME: ATTN_ASSETS_HOME/dagster_home, as the README says
    restore_cli_env.delenv("DAGSTER_HOME")
    assert cli.main(["ui", "--dry-run"]) == cli.EXIT_OK
    assert filecmp.cmp(pipeline_env.home / "dagster_home" / "dagster.yaml", S.DAGSTER_YAML, shallow=False)


def test_makefile_starts_the_ui_through_the_cli():
    makefile = (S.REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    ui_recipe = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "attn-assets ui" in ui_recipe and "dagster dev" not in ui_recipe


def test_known_harmless_warnings_are_silenced_and_no_others(recwarn, caplog):
    import logging
    import warnings

    from attn_assets.known_warnings import silence_known_harmless

    with warnings.catch_warnings():
        silence_known_harmless()
        warnings.warn_explicit("Parameter `backfill_policy` of function `asset` is currently in beta", dg.BetaWarning,
                               "decorator_utils.py", 232, module="dagster._core.decorator_utils")
        warnings.warn_explicit("Parameter `other` of function `asset` is currently in beta", dg.BetaWarning,
                               "decorator_utils.py", 232, module="dagster._core.decorator_utils")
        warnings.warn_explicit("Parameter `backfill_policy` of function `asset` is currently in beta", dg.BetaWarning,
                               "mine.py", 1, module="my_package.mine")
    assert [str(w.message).split("`")[1] for w in recwarn] == ["other", "backfill_policy"]

    logger = logging.getLogger("transformers.utils.import_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.utils.import_utils"):
        logger.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                       "`CLIPImageProcessorPil` for backward compatibility.")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_help_names_the_variables_and_every_default(capsys):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("materialize", "show", "ui", "extract", "demo-data", "sql"):
        for action in subparsers[name]._actions:
            if action.dest in ("help", "version") or not action.option_strings:
                continue
            assert action.help and ("default" in action.help or "required" in action.help), (name, action.dest)
    with pytest.raises(SystemExit):
        cli.main(["materialize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Settings come from ATTN_ASSETS_* environment variables" in text
    for flag, variable in (("--manifest", "ATTN_ASSETS_MANIFEST"), ("--image-root", "ATTN_ASSETS_IMAGE_ROOT"),
                           ("--model", "ATTN_ASSETS_MODEL"), ("--home", "ATTN_ASSETS_HOME")):
        assert flag in text and f"overrides {variable}" in text
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    from importlib.metadata import version

    assert capsys.readouterr().out.strip() == f"attn-assets {version('attn-assets')}"


@pytest.mark.parametrize("command", ["materialize", "show", "ui", "extract", "demo-data", "sql", "validate"])
def test_version_after_a_command(command, capsys):
    """`attn-assets materialize --version` prints the version, as `attn-assets --version` does (was unrecognized)."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"attn-assets {version('attn-assets')}"

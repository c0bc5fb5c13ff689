"""Fixtures for the analyses tests: the pipeline fixtures of attn_assets_tests/defs, re-registered here."""

from attn_assets_tests.defs.conftest import instance, pipeline_env  # noqa: F401

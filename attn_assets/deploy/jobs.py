"""Module-scope job factories, so runs can be reconstructed by Celery workers and run orchestrators."""

from __future__ import annotations


def attention_statistics_job():
    from attn_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("attention_statistics_job")

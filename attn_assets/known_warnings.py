"""Warnings we know to be harmless, silenced narrowly: one message, from one module, of one category.

- Dagster's BetaWarning for ``backfill_policy`` (dagster._core.decorator_utils, once per partitioned asset at
  import): the per-shard assets use ``BackfillPolicy.multi_run`` on purpose (a backfill of many shards runs in
  bounded groups); the warning only says the parameter may change in a minor Dagster release.
- transformers' ``<X>ImageProcessor requires torchvision (not installed); falling back to <X>ImageProcessorPil``
  (logger transformers.utils.import_utils): the core venv has no torchvision by design (it pairs only with a
  larger torch build, see the Makefile), and the PIL processor is the one the seed used.

Every other warning of these libraries still shows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_FALLBACK not in record.getMessage()


_FILTER = _DropTorchvisionFallback()


def silence_transformers_torchvision_fallback() -> None:
    """Drop transformers' torchvision fallback notice (and only it) from its import_utils logger."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def silence_dagster_backfill_policy_beta() -> None:
    """Ignore Dagster's BetaWarning about the ``backfill_policy`` parameter (and no other warning)."""
    from dagster import BetaWarning

    warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` ", category=BetaWarning,
                            module=r"dagster\._core\.decorator_utils")


def silence_known_harmless() -> None:
    """Both of the above; called by the CLI and by the code location before the definitions load."""
    silence_transformers_torchvision_fallback()
    silence_dagster_backfill_policy_beta()


@contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Inside the block, huggingface_hub's logger (and its children, e.g. ``huggingface_hub.utils._http``, whose
    ``http_backoff`` warns "Retrying in 8s [Retry 5/5]." per attempt) shows errors only; its level is restored
    after. For the model check, whose one message already names the cause: the retries add lines, not facts."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

"""Partitions shared across domains: one dynamic partition per manifest shard, and per listed model (the model
dimension of the models group: ``model`` x ``shard``)."""

from pathlib import Path

import dagster as dg

from attn_assets.settings import models_setting

SHARD_PARTITIONS_NAME = "shards"
MODEL_PARTITIONS_NAME = "models"

shard_partitions = dg.DynamicPartitionsDefinition(name=SHARD_PARTITIONS_NAME)
model_partitions = dg.DynamicPartitionsDefinition(name=MODEL_PARTITIONS_NAME)
model_shard_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "shard": shard_partitions})


def sync_model_partitions(instance: dg.DagsterInstance, models_dir: Path) -> list[str]:
    """Register a ``models`` partition for every model of ATTN_ASSETS_MODELS; delete the partition of a model no
    longer listed whose folder (``models/<model_key>/``) is gone too. Returns the listed keys, in list order.
    Raises ValueError (the setting's message) when ATTN_ASSETS_MODELS is malformed."""
    listed = [entry.key for entry in models_setting()]
    registered = set(instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME))
    new = [key for key in listed if key not in registered]
    if new:
        instance.add_dynamic_partitions(MODEL_PARTITIONS_NAME, new)
    for key in sorted(registered - set(listed)):
        if not (models_dir / key).exists():
            instance.delete_dynamic_partition(MODEL_PARTITIONS_NAME, key)
    return listed

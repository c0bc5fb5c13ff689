"""Partitions shared across domains: one dynamic partition per manifest shard."""

import dagster as dg

SHARD_PARTITIONS_NAME = "shards"

shard_partitions = dg.DynamicPartitionsDefinition(name=SHARD_PARTITIONS_NAME)

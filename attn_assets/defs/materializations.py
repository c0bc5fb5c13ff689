"""What the Dagster instance says about materializations, for the code that decides what to run next
(`attn-assets materialize`, the schedule and the sensors)."""

import dagster as dg

#: A partition in one of these states needs no new run.
DONE_STATUSES = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)


def latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> int:
    """Storage id of the asset's (or one partition's) latest materialization; 0 when never materialized.
    Ids grow with time, so comparing them orders materializations across assets."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0].storage_id if records else 0

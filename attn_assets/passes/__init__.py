"""The per-shard passes: one shard's manifest rows (or stored results) in, one atomic Parquet file out.

No Dagster here: the assets in ``defs/`` call these functions once per partition, and ``attn-assets
materialize``, the tests and the benchmarks can call them directly. Every pass has the same shape: a
keyword-only ``compute_<pass>_shard(layout=..., shard_key=..., ..., logger=...)`` that reads its inputs
through ``HomeLayout``, builds its table through the schema in ``storage/``, writes it atomically with
its recipe record and returns a ``ShardOutcome``.
"""

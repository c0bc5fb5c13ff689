"""The per-shard passes: one shard's manifest rows (or stored results) in, one atomic Parquet file out.

No Dagster here: the assets in ``defs/`` call these functions once per partition, and ``attn-assets
materialize``, the tests and the benchmarks can call them directly. Every pass has the same shape: a
keyword-only ``compute_<pass>_shard(layout=..., shard_key=..., ..., logger=...)`` that reads its inputs
through ``HomeLayout``, builds its table through the schema in ``storage/``, writes it atomically with
its recipe record and returns a ``ShardOutcome``.

  statistics.py   the encoder's CLS attention of every layer   -> shards/<shard>.parquet
  rollout.py      attention rollout (own forward pass)         -> analyses/rollout/<shard>.parquet
  ablation.py     top-k vs random-k masking (own passes)       -> analyses/ablation/<shard>.parquet
  geolocation.py  PLONK on the stored CLS embeddings           -> geolocation/<shard>.parquet
  inputs.py       a shard's rows of the validated manifest
  outcome.py      ShardOutcome, what every pass returns
  recipe.py       what produced a shard file (its recipe record) and how it compares with now
  current.py      the pass table and whether a pass's file for a shard is current
"""

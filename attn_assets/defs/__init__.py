"""The Dagster definitions, loaded as a defs folder (``dg.load_from_defs_folder``, from attn_assets/definitions.py).

  <domain>/assets.py  manifest, statistics, warehouse, visuals, analyses, geolocation: assets and their checks
  jobs.py             every job
  schedules.py        every schedule
  sensors.py          every sensor
  resources.py        the resources, read from the environment
  needs_run.py        what still needs a run: asked by the schedule, the sensors and `attn-assets materialize`
  runs.py             run tags naming the process of a headless run, dead and in-flight runs
  shard_passes.py     the Dagster side of the per-shard passes: asset keys, metadata, data and code versions
  partitions.py       the dynamic shard partitions
  metadata.py         how tables and figures show in the UI
"""

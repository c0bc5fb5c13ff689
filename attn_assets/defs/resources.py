"""The resources every asset, sensor and schedule of the defs folder is bound to, read from the environment
each time the definitions are built (attn_assets/resources.py defines them)."""

import dagster as dg

from attn_assets.resources import resources_from_env


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())

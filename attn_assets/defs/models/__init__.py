"""The model dimension: every encoder of ATTN_ASSETS_MODELS over the same shards (model x shard partitions)."""

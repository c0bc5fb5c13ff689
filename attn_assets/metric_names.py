"""The seed's six per-image metric names: the contract shared by the core, storage and figures."""

METRIC_NAMES: tuple[str, ...] = (
    "attention_entropy",
    "attention_max",
    "attention_concentration_top10",
    "attention_concentration_top25",
    "num_high_attention_patches",
    "attention_spread",
)

"""Metric names shared by the core, storage and figures (no heavy imports here)."""

METRIC_NAMES: tuple[str, ...] = (
    "attention_entropy",
    "attention_max",
    "attention_concentration_top10",
    "attention_concentration_top25",
    "num_high_attention_patches",
    "attention_spread",
)

# Spatial statistics of the CLS map (analyses beyond the seed).
SPATIAL_NAMES: tuple[str, ...] = (
    "attention_com_x",
    "attention_com_y",
    "attention_com_distance",
    "attention_center_distance",
    "attention_share_top",
    "attention_share_middle",
    "attention_share_bottom",
    "attention_share_left",
    "attention_share_right",
)

#: Geolocation accuracy radii (km) of the OSV-5M / PLONK benchmarks: street, city, region, country, continent.
ACCURACY_THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)

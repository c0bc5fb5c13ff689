"""Cross-model comparison: the encoders of ATTN_ASSETS_COMPARE_MODELS over the same images, maps compared."""

"""Cross-model comparison: every pair of ATTN_ASSETS_MODELS, maps compared per image from each model's statistics."""

"""Training of the demo model (no Dagster): ``demo_model`` trains the small CLIP model committed in
``models/demo`` on freshly drawn demo scenes, with a zero-shot classification loss only."""

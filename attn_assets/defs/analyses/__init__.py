"""Analyses beyond the seed: layer/head/artifact/spatial statistics, baselines, rollout, ablation."""

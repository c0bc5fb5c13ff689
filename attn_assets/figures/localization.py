"""The localization benchmark's figure: how much of each map lies on the planted cue, trained vs randomized."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._mpl import figure_footer, new_figure, save_figure

_COLOURS = {"trained": "#1f77b4", "randomized": "#ff7f0e"}


def _errorbar(ax, x, frame: pd.DataFrame, mean: str, low: str, high: str, colour: str, label: str, marker="o-"):
    values = frame[mean].to_numpy(float)
    lower = np.clip(values - frame[low].to_numpy(float), 0, None)
    upper = np.clip(frame[high].to_numpy(float) - values, 0, None)
    ax.errorbar(x, values, yerr=np.nan_to_num(np.stack([lower, upper])), fmt=marker, color=colour, capsize=3,
                label=label)


def render_localization(summary: pd.DataFrame, out_path: str | os.PathLike, *, model_spec: str | None = None,
                        dpi: int = 100) -> Path:
    """1x3: energy-in-box ratio by layer (head-averaged CLS maps; rollout and the last-layer map as separate
    points), the same per last-layer head, and the pointing-game rate of the headline maps; trained vs randomized
    weights, 95% bootstrap intervals as error bars, uniform attention as a dashed line.

    summary: rows of the localization_summary table (attn_assets.storage.schema.LOCALIZATION_SUMMARY).
    """
    if summary.empty:
        with new_figure((8, 2.5), dpi=dpi) as fig:
            ax = fig.subplots()
            ax.text(0.5, 0.5, "No image has a cue box (manifest column cue_box): nothing to score.\n"
                    "The demo data plants one per image (attn-assets demo-data).", ha="center", va="center")
            ax.axis("off")
            return save_figure(fig, out_path, footer=figure_footer(model_spec, 0))
    with new_figure((16, 5.2), dpi=dpi) as fig:
        axes = fig.subplots(1, 3, squeeze=True)
        images = int(summary["images"].max()) if len(summary) else 0
        for weights, group in summary.groupby("weights", sort=False):
            colour = _COLOURS.get(str(weights), "#2ca02c")
            layers = group[group["map_type"] == "cls_attention_layer"].sort_values("layer")
            if len(layers):
                _errorbar(axes[0], layers["layer"].to_numpy(int), layers, "energy_ratio_mean", "energy_ratio_ci_low",
                          "energy_ratio_ci_high", colour, f"{weights}: layer (head mean)")
                rollout = group[group["map_type"] == "rollout"]
                if len(rollout):
                    _errorbar(axes[0], [int(layers["layer"].max()) + 1], rollout, "energy_ratio_mean",
                              "energy_ratio_ci_low", "energy_ratio_ci_high", colour, f"{weights}: rollout", "s")
            heads = group[group["map_type"] == "cls_attention_head"].sort_values("head")
            if len(heads):
                _errorbar(axes[1], heads["head"].to_numpy(int), heads, "energy_ratio_mean", "energy_ratio_ci_low",
                          "energy_ratio_ci_high", colour, f"{weights}")
            headline = group[group["map"].isin(["cls_attention", "rollout"])].set_index("map").reindex(
                ["cls_attention", "rollout"]).reset_index()
            offset = -0.15 if weights == "trained" else 0.15
            _errorbar(axes[2], np.arange(2) + offset, headline, "pointing_rate", "pointing_ci_low",
                      "pointing_ci_high", colour, f"{weights}", "D")
        uniform = summary["uniform_pointing_rate"].mean() if len(summary) else float("nan")
        for ax in axes[:2]:
            ax.axhline(1.0, color="0.5", linestyle="--", label="uniform map = 1")
            ax.set_ylabel("energy in box / box area share")
            ax.legend(fontsize=8, loc="best")
        layer_count = summary.loc[summary["map_type"] == "cls_attention_layer", "layer"]
        if len(layer_count):
            last = int(layer_count.max())
            axes[0].set_xticks(list(range(last + 2)), [str(i) for i in range(last + 1)] + ["rollout"])
        axes[0].set_xlabel("layer (0-based)")
        axes[0].set_title("Energy on the cue, by layer")
        axes[1].set_xlabel("last-layer head")
        axes[1].set_title("Energy on the cue, per last-layer head")
        if np.isfinite(uniform):
            axes[2].axhline(uniform, color="0.5", linestyle="--", label=f"uniform map = {uniform:.2f}")
        axes[2].set_xticks([0, 1], ["last layer (head mean)", "rollout"])
        axes[2].set_xlim(-0.6, 1.6)
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].set_ylabel("pointing-game hit rate")
        axes[2].set_title("Pointing game")
        axes[2].legend(fontsize=8, loc="best")
        fig.suptitle("Localization benchmark: does attention fall on the planted country cue? (error bars: 95% "
                     "bootstrap interval)")
        fig.tight_layout()
        return save_figure(fig, out_path, footer=figure_footer(model_spec, images, "cues in the model's crop"))

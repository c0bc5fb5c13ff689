"""Figures of zero-shot country classification and of the faithfulness of attention, rollout and relevance maps.

- ``render_country_accuracy``: accuracy and top-5 accuracy per true country (most images first), overall as lines;
- ``render_confusion``: the confusion matrix as shares of each true country's images, for up to
  ``MAX_MATRIX_COUNTRIES`` countries; beyond that a bar chart of the most frequent confusions;
- ``render_faithfulness``: mean deletion and insertion curves per patch order, and the mean AUC with its
  bootstrap interval;
- ``misclassified_caption``: the title line of a misclassified triptych (true vs predicted country).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._mpl import new_figure, save_figure

MAX_MATRIX_COUNTRIES = 50
TOP_CONFUSIONS = 30
MAX_ACCURACY_COUNTRIES = 40
MAP_COLORS = {"attention": "tab:blue", "rollout": "tab:orange", "relevance": "tab:green", "random": "0.5"}


def render_country_accuracy(accuracy: pd.DataFrame, out_path: str | os.PathLike, footer: str | None = None) -> Path:
    """``accuracy``: rows of table country_accuracy (``scope`` overall first). Draws the countries with the most
    images (at most ``MAX_ACCURACY_COUNTRIES``)."""
    overall = accuracy[accuracy["scope"] == "overall"]
    countries = accuracy[accuracy["scope"] == "country"].head(MAX_ACCURACY_COUNTRIES)
    height = max(2.5, 0.28 * len(countries) + 1.2)
    with new_figure((7.5, height)) as fig:
        ax = fig.add_subplot()
        y = np.arange(len(countries))
        ax.barh(y - 0.2, countries["top5_accuracy"], height=0.4, color="tab:cyan", label="top-5 accuracy")
        ax.barh(y + 0.2, countries["accuracy"], height=0.4, color="tab:blue", label="accuracy")
        ax.set_yticks(y, [f"{c} ({n})" for c, n in zip(countries["country"], countries["images"])], fontsize=8)
        ax.invert_yaxis()
        if len(overall) and overall["images"].iloc[0]:
            ax.axvline(overall["accuracy"].iloc[0], color="tab:blue", ls="--", lw=1, label="overall accuracy")
            ax.axvline(overall["top5_accuracy"].iloc[0], color="tab:cyan", ls="--", lw=1, label="overall top-5")
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the country's images")
        ax.set_title("Zero-shot country accuracy (country (images))")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return save_figure(fig, out_path, footer=footer)


def confusion_matrix(confusion: pd.DataFrame) -> pd.DataFrame:
    """Table country_confusion -> a square frame of shares, true countries as rows (most images first), every
    country seen as true or predicted in both axes, 0 where a pair never occurs."""
    totals = confusion.groupby("country")["images"].sum().sort_values(ascending=False, kind="stable")
    order = list(totals.index) + sorted(set(confusion["predicted_country"]) - set(totals.index))
    matrix = confusion.pivot_table(index="country", columns="predicted_country", values="share", aggfunc="sum")
    return matrix.reindex(index=order, columns=order).fillna(0.0)


def render_confusion(confusion: pd.DataFrame, out_path: str | os.PathLike, footer: str | None = None) -> Path:
    """The confusion matrix (shares per true country) for up to ``MAX_MATRIX_COUNTRIES`` countries; with more, the
    ``TOP_CONFUSIONS`` most frequent wrong (true, predicted) pairs as bars."""
    matrix = confusion_matrix(confusion)
    if len(matrix) <= MAX_MATRIX_COUNTRIES:
        side = max(3.5, 0.22 * len(matrix) + 1.8)
        with new_figure((side + 0.8, side)) as fig:
            ax = fig.add_subplot()
            image = ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0, vmax=1)
            ticks = np.arange(len(matrix))
            size = 8 if len(matrix) <= 25 else 6
            ax.set_xticks(ticks, matrix.columns, rotation=90, fontsize=size)
            ax.set_yticks(ticks, matrix.index, fontsize=size)
            ax.set_xlabel("predicted country")
            ax.set_ylabel("true country")
            ax.set_title("Zero-shot confusion matrix (share of the true country's images)")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            fig.tight_layout()
            return save_figure(fig, out_path, footer=footer)
    wrong = confusion[confusion["country"] != confusion["predicted_country"]]
    wrong = wrong.sort_values(["images", "country"], ascending=[False, True]).head(TOP_CONFUSIONS)
    with new_figure((7.0, max(2.5, 0.26 * len(wrong) + 1.2))) as fig:
        ax = fig.add_subplot()
        y = np.arange(len(wrong))
        ax.barh(y, wrong["images"], color="tab:red")
        ax.set_yticks(y, [f"{t} -> {p} ({s:.0%})" for t, p, s in
                          zip(wrong["country"], wrong["predicted_country"], wrong["share"])], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("images")
        ax.set_title(f"Most frequent confusions ({len(matrix)} countries: too many for a matrix)")
        fig.tight_layout()
        return save_figure(fig, out_path, footer=footer)


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Table faithfulness_curves -> one row per (map, mode) with the mean ``curve`` (NaN-free curves only)."""
    rows = []
    for (name, mode), group in curves.groupby(["map", "mode"], sort=True):
        stacked = np.stack([np.asarray(c, dtype=np.float64) for c in group["curve"] if c is not None])
        rows.append({"map": name, "mode": mode, "curve": stacked.mean(axis=0), "images": len(stacked)})
    return pd.DataFrame(rows, columns=["map", "mode", "curve", "images"])


def render_faithfulness(summary: pd.DataFrame, curves: pd.DataFrame, out_path: str | os.PathLike,
                        footer: str | None = None) -> Path:
    """Left two panels: mean deletion and insertion curves per patch order; right: the overall mean AUCs with their
    95% bootstrap intervals (deletion: lower is more faithful; insertion: higher)."""
    means = mean_curves(curves)
    overall = summary[summary["scope"] == "overall"]
    with new_figure((12.0, 3.6)) as fig:
        axes = fig.subplots(1, 3)
        for ax, mode in zip(axes[:2], ("deletion", "insertion")):
            for _, row in means[means["mode"] == mode].iterrows():
                x = np.linspace(0, 1, len(row["curve"]))
                ax.plot(x, row["curve"], marker="o", ms=3, color=MAP_COLORS.get(row["map"]), label=row["map"])
            ax.set_xlabel(f"fraction of patches {'removed' if mode == 'deletion' else 'revealed'}")
            ax.set_ylabel("true country's probability")
            ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} area = more faithful)")
            ax.legend(fontsize=7)
        ax = axes[2]
        names = [m for m in MAP_COLORS if m in set(overall["map"])]
        for offset, mode in ((-0.18, "deletion"), (0.18, "insertion")):
            rows = overall[overall["mode"] == mode].set_index("map").reindex(names)
            x = np.arange(len(names)) + offset
            error = np.vstack([rows["mean_auc"] - rows["ci_low"], rows["ci_high"] - rows["mean_auc"]])
            ax.errorbar(x, rows["mean_auc"], yerr=error, fmt="o" if mode == "deletion" else "s", capsize=3, label=mode)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_ylabel("mean AUC (95% bootstrap interval)")
        ax.set_title("Which map is most faithful")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, out_path, footer=footer)


def misclassified_caption(row: dict) -> str:
    """'true FR, predicted DE (p=0.83; true p=0.05, rank 4)' for a row of table country_predictions."""
    return (f"true {row.get('country') or '?'}, predicted {row['predicted_country']} "
            f"(p={row['predicted_probability']:.2f}; true p={row['true_probability']:.2f}, rank {int(row['true_rank'])})")

"""Figures of the analyses beyond the seed's six metrics: matplotlib Agg, atomic writes, no Dagster.

* ``render_layer_profile``  entropy and top-10% concentration by depth (mean +/- std, and per country)
* ``render_head_maps``      each last-layer head's mean CLS map, with its mean entropy / concentration
* ``render_artifacts``      artifact-token counts, their attention share, metrics with vs without them
* ``render_spatial``        left/right share by OSV-5M drive side, centre of mass, region shares,
                            each beside the permutation and uniform baselines
* ``render_baselines``      real mean vs uniform vs permuted value of every metric, as a table
* ``render_rollout_gallery`` last-layer CLS map vs attention-rollout map, overlaid on the model's crop
* ``render_ablation``       cosine distance of the CLS embedding after masking top-k vs random-k patches
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable

from ._mpl import new_figure, save_figure
from .countries import country_caption
from .geometry import as_grid, image_file
from .scale import UNIT_LABEL, add_colorbar, map_scale, mark_near_uniform, shared_scale, times_uniform

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- 1: layer profile


def render_layer_profile(
    overall: pd.DataFrame,
    by_country: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    uniform: Mapping[str, float] | None = None,
    dpi: int = 100,
    footer: str | None = None,
) -> Path:
    """2x2: entropy and top-10% concentration by layer, mean +/- std over images (top row) and
    the mean per country (bottom row).

    overall: columns layer, images, <metric>_mean, <metric>_std for attention_entropy and
    attention_concentration_top10. by_country: columns country, layer, images, <metric>_mean.
    uniform: metric -> value of uniform attention, drawn as a dashed line.
    """
    metrics = [("attention_entropy", "Entropy (nats)"), ("attention_concentration_top10", "Top-10% concentration")]
    with new_figure((14, 9), dpi=dpi) as fig:
        axes = fig.subplots(2, 2, squeeze=False)
        for col, (metric, label) in enumerate(metrics):
            ax = axes[0][col]
            if overall.empty:
                _no_data(ax)
            else:
                frame = overall.sort_values("layer")
                x = frame["layer"].to_numpy()
                mean = frame[f"{metric}_mean"].to_numpy(float)
                std = np.nan_to_num(frame[f"{metric}_std"].to_numpy(float))
                ax.plot(x, mean, "o-", color="#1f77b4", label="mean over images")
                ax.fill_between(x, mean - std, mean + std, color="#1f77b4", alpha=0.2, label="mean +/- std")
                if uniform and metric in uniform:
                    ax.axhline(uniform[metric], color="#7f7f7f", linestyle="--", label=f"uniform = {uniform[metric]:.3g}")
                ax.set_xticks(x)
                ax.legend(fontsize=8, loc="best")
            ax.set_title(f"{label} by layer (n = {int(overall['images'].max()) if len(overall) else 0:,} images)")
            ax.set_xlabel("layer (0-based)")
            ax.set_ylabel(label)
            ax = axes[1][col]
            if by_country.empty:
                _no_data(ax, "no countries")
            else:
                for i, (country, group) in enumerate(by_country.groupby("country", sort=False)):
                    group = group.sort_values("layer")
                    n = int(group["images"].max())
                    ax.plot(group["layer"], group[f"{metric}_mean"], "o-", markersize=3, color=_COLORS[i % 10],
                            label=f"{country or '(none)'} (n={n:,})")
                ax.set_xticks(sorted(by_country["layer"].unique()))
                ax.legend(fontsize=7, loc="best", ncol=2)
            ax.set_title(f"{label} by layer, mean per country (largest countries)")
            ax.set_xlabel("layer (0-based)")
            ax.set_ylabel(label)
        fig.suptitle("Multi-layer profile of the CLS attention (heads averaged; last layer = the seed's)", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


# --------------------------------------------------------------------------- 2: heads


def render_head_maps(
    mean_maps: np.ndarray | None,
    head_summary: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    images: int = 0,
    mean_similarity: float | None = None,
    ncols: int = 8,
    dpi: int = 100,
    footer: str | None = None,
) -> Path:
    """One panel per last-layer head: its mean CLS map, titled with the head's mean entropy and top-10%
    concentration. ``mean_maps[H, gh, gw]``; head_summary: head, attention_entropy_mean,
    attention_concentration_top10_mean.

    Every head is drawn on ONE colour scale in × uniform (the mean map times N, `scale`), with one colour bar:
    heads that look different are different. A head whose own map is near-uniform is marked."""
    heads = 0 if mean_maps is None else int(mean_maps.shape[0])
    n = max(heads, 1)
    ncols = max(1, min(ncols, n))
    nrows = int(math.ceil(n / ncols))
    summary = head_summary.set_index("head") if len(head_summary) else pd.DataFrame()
    scale = shared_scale([mean_maps[h] for h in range(heads)]) if heads else None
    with new_figure((2.4 * ncols + 1.3, 2.7 * nrows + 0.9), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes:
            ax.axis("off")
        if not heads:
            _no_data(axes[0], "no per-head maps")
        for h in range(heads):
            ax = axes[h]
            ax.imshow(times_uniform(mean_maps[h]), cmap="hot", norm=scale.norm(), interpolation="nearest")
            mark_near_uniform(ax, map_scale(mean_maps[h]), fontsize=6)
            title = f"head {h}"
            if h in summary.index:
                row = summary.loc[h]
                title += f"\nH={row['attention_entropy_mean']:.2f}  top10={row['attention_concentration_top10_mean']:.2f}"
            ax.set_title(title, fontsize=8)
        similarity = "" if mean_similarity is None or not np.isfinite(mean_similarity) else \
            f"; mean pairwise cosine of head maps = {mean_similarity:.3f}"
        fig.suptitle(f"Last layer: mean CLS map of each head (n = {images:,} images{similarity}; "
                     "one colour scale for all heads)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_size_inches()[0], 0.95))
        if scale is not None:
            cax = fig.add_axes((1 - 0.75 / fig.get_size_inches()[0], 0.1, 0.15 / fig.get_size_inches()[0], 0.78))
            fig.colorbar(ScalarMappable(norm=scale.norm(), cmap="hot"), cax=cax).set_label(UNIT_LABEL, fontsize=8)
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


# --------------------------------------------------------------------------- 5: artifacts


def render_artifacts(frame: pd.DataFrame, out_path: str | os.PathLike, *, dpi: int = 100,
                     footer: str | None = None) -> Path:
    """1x3: artifact patches per image; share of CLS attention they take; entropy and top-10%
    concentration with vs without them (points on y = x: artifacts change nothing)."""
    with new_figure((17, 5), dpi=dpi) as fig:
        axes = fig.subplots(1, 3)
        if frame.empty:
            for ax in axes:
                _no_data(ax)
        else:
            counts = frame["artifact_count"].to_numpy(int)
            axes[0].hist(counts, bins=np.arange(-0.5, counts.max() + 1.5, 1), color="#4c72b0", edgecolor="white")
            axes[0].set_title(f"Artifact patches per image (mean {counts.mean():.2f})")
            axes[0].set_xlabel("patches with output-token norm > median + 5 MAD-sigma")
            axes[0].set_ylabel("images")
            share = frame["artifact_attention_share"].to_numpy(float)
            axes[1].hist(share, bins=30, range=(0, max(1e-6, float(np.nanmax(share)))), color="#dd8452", edgecolor="white")
            axes[1].set_title(f"Share of CLS attention on artifact patches (mean {np.nanmean(share):.3f})")
            axes[1].set_xlabel("fraction of the CLS-to-patch attention")
            axes[1].set_ylabel("images")
            ax = axes[2]
            for metric, color, label in (("attention_entropy", "#1f77b4", "entropy (nats)"),
                                         ("attention_concentration_top10", "#d62728", "top-10% concentration")):
                ax.scatter(frame[metric], frame[f"{metric}_without_artifacts"], s=10, alpha=0.6, color=color, label=label)
            lo = float(np.nanmin(frame[["attention_entropy", "attention_concentration_top10"]].to_numpy(float)))
            hi = float(np.nanmax(frame[["attention_entropy", "attention_concentration_top10"]].to_numpy(float)))
            ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=1, label="y = x")
            ax.set_xlabel("with artifact patches (seed metric)")
            ax.set_ylabel("artifact patches removed")
            ax.set_title("Metrics with vs without artifact tokens")
            ax.legend(fontsize=8)
        fig.suptitle("High-norm artifact tokens (Darcet et al. 2023) in the last layer", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


# --------------------------------------------------------------------------- 6: spatial


def render_spatial(frame: pd.DataFrame, out_path: str | os.PathLike, *, uniform: Mapping[str, float] | None = None,
                   dpi: int = 100, footer: str | None = None) -> Path:
    """1x3: (right - left) attention share by OSV-5M drive side, real vs permuted; centre of mass of
    each image (real vs permuted); mean share per region, real vs permuted vs uniform.

    frame: drive_side (``images.drive_side``: 'left' or 'right', '' when unknown) and the spatial columns with
    their ``_permuted`` twins.
    """
    uniform = uniform or {}
    with new_figure((18, 5.5), dpi=dpi) as fig:
        axes = fig.subplots(1, 3)
        if frame.empty:
            for ax in axes:
                _no_data(ax)
        else:
            ax = axes[0]
            sides = frame["drive_side"].fillna("").replace("", "unknown")
            groups = sorted(sides.unique())
            data, labels, colors = [], [], []
            for side in groups:
                sub = frame[sides == side]
                data.append((sub["attention_share_right"] - sub["attention_share_left"]).to_numpy(float))
                labels.append(f"{side}\nreal (n={len(sub)})")
                colors.append("#4c72b0")
                data.append((sub["attention_share_right_permuted"] - sub["attention_share_left_permuted"]).to_numpy(float))
                labels.append(f"{side}\npermuted")
                colors.append("#bbbbbb")
            parts = ax.boxplot(data, patch_artist=True, widths=0.6)
            ax.set_xticks(range(1, len(labels) + 1))
            ax.set_xticklabels(labels, fontsize=8)
            for patch, color in zip(parts["boxes"], colors):
                patch.set_facecolor(color)
            ax.axhline(0, color="0.4", linestyle="--", linewidth=1)
            ax.set_ylabel("right-half share - left-half share")
            ax.set_title("Left vs right attention by drive side (OSV-5M drive_side)")

            ax = axes[1]
            ax.scatter(frame["attention_com_x_permuted"], frame["attention_com_y_permuted"], s=10, color="#bbbbbb",
                       label="permuted patches")
            ax.scatter(frame["attention_com_x"], frame["attention_com_y"], s=12, color="#d62728", label="real")
            ax.plot([0.5], [0.5], "k+", markersize=14, label="view centre")
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_aspect("equal")
            ax.set_xlabel("x (left -> right of the model's view)")
            ax.set_ylabel("y (top -> bottom)")
            ax.set_title("Attention centre of mass per image")
            ax.legend(fontsize=8, loc="lower right")

            ax = axes[2]
            regions = ["top", "middle", "bottom", "left", "right"]
            x = np.arange(len(regions))
            real = [frame[f"attention_share_{r}"].mean() for r in regions]
            perm = [frame[f"attention_share_{r}_permuted"].mean() for r in regions]
            uni = [uniform.get(f"attention_share_{r}", np.nan) for r in regions]
            ax.bar(x - 0.27, real, 0.27, color="#4c72b0", label="real (mean)")
            ax.bar(x, perm, 0.27, color="#bbbbbb", label="permuted (mean)")
            ax.bar(x + 0.27, uni, 0.27, color="#55a868", label="uniform")
            ax.set_xticks(x)
            ax.set_xticklabels(["top third", "middle third", "bottom third", "left half", "right half"], fontsize=9)
            ax.set_ylabel("share of attention")
            ax.set_title("Where the attention lies, vs baselines")
            ax.legend(fontsize=8)
        fig.suptitle("Spatial statistics of the last-layer CLS attention (model's centre crop)", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


# --------------------------------------------------------------------------- 4: baselines


def baselines_markdown(table: pd.DataFrame) -> str:
    """metric_baselines as a markdown table."""
    if table.empty:
        return "_(no rows)_"
    shown = table[["metric", "num_patches", "images", "real_mean", "uniform", "permuted_mean", "permutation_invariant"]]
    return shown.round(5).to_markdown(index=False)


def render_baselines(table: pd.DataFrame, out_path: str | os.PathLike, *, dpi: int = 120,
                     footer: str | None = None) -> Path:
    """The metric_baselines rows drawn as a table: real mean (std), uniform, permuted mean."""
    header = ["metric", "N", "real mean (std)", "uniform", "permuted mean", "perm.-invariant"]
    cells = [
        [r.metric, f"{int(r.num_patches)}", f"{r.real_mean:.4g} ({r.real_std:.2g})", f"{r.uniform:.4g}",
         "=" if r.permutation_invariant else f"{r.permuted_mean:.4g}", "yes" if r.permutation_invariant else "no"]
        for r in table.itertuples()
    ]
    with new_figure((12, 0.32 * (len(cells) + 2) + 0.8), dpi=dpi) as fig:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        if cells:
            tbl = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="left")
            tbl.auto_set_font_size(False)
            tbl.set_fontsize(8)
            tbl.auto_set_column_width(list(range(len(header))))
        else:
            _no_data(ax)
        ax.set_title("Metrics vs uniform attention and vs a seeded patch permutation ('=' : equal to real)",
                     fontsize=10)
        return save_figure(fig, out_path, dpi=dpi, bbox_inches="tight", footer=footer)


# --------------------------------------------------------------------------- 3: rollout


def render_rollout_gallery(
    rows: pd.DataFrame,
    cls_maps: Mapping[str, np.ndarray],
    rollout_maps: Mapping[str, np.ndarray],
    boxes: Mapping[str, tuple | None],
    out_path: str | os.PathLike,
    *,
    dpi: int = 100,
    footer: str | None = None,
) -> tuple[Path, list[str]]:
    """One row per image: the model's crop with the last-layer CLS map | with the rollout map |
    the rollout map alone. Maps are placed on the crop region, never stretched over the photo.
    rows: image_id, abs_path, member (optional), country, attention_entropy (rollout), and optionally ``selection`` (why the row
    was chosen, e.g. 'lowest rollout entropy #1'), written as the row's label at the left. Each map keeps the
    seed's min-max look with a colour bar in × uniform (`scale`). Returns (path, skipped ids)."""
    from .triptych import draw_overlay, prepare_view

    views, skipped = [], []
    for row in rows.itertuples():
        image = image_file(row.abs_path, getattr(row, "member", None))
        if row.image_id not in rollout_maps or image is None:
            skipped.append(row.image_id)
            continue
        try:
            _, _, crop, heat_rollout = prepare_view(image, as_grid(rollout_maps[row.image_id]), boxes.get(row.image_id))
            heat_cls = None
            if row.image_id in cls_maps:
                _, _, _, heat_cls = prepare_view(image, as_grid(cls_maps[row.image_id]), boxes.get(row.image_id))
        except OSError:
            skipped.append(row.image_id)
            continue
        views.append((row, crop, heat_cls, heat_rollout))
    n = max(len(views), 1)
    with new_figure((13.5, 3.6 * n + 0.8), dpi=dpi) as fig:
        axes = fig.subplots(n, 3, squeeze=False)
        if not views:
            for ax in axes[0]:
                ax.axis("off")
            _no_data(axes[0][1], "no rollout maps")
        for (row, crop, heat_cls, heat_rollout), ax_row in zip(views, axes):
            country = country_caption(getattr(row, "country_name", None), row.country)
            cls_range = ""
            if heat_cls is not None:
                draw_overlay(ax_row[0], crop, heat_cls)
                cls_scale = map_scale(cls_maps[row.image_id])
                add_colorbar(fig, ax_row[0], cls_scale, "hot", label="× uniform")
                mark_near_uniform(ax_row[0], cls_scale, fontsize=7)
                cls_range = f"\n{cls_scale.range_text()}"
            else:
                ax_row[0].axis("off")
            ax_row[0].set_title(f"{row.image_id} ({country})\nlast-layer CLS attention{cls_range}", fontsize=9)
            rollout_scale = map_scale(rollout_maps[row.image_id])
            draw_overlay(ax_row[1], crop, heat_rollout)
            add_colorbar(fig, ax_row[1], rollout_scale, "hot", label="× uniform")
            mark_near_uniform(ax_row[1], rollout_scale, fontsize=7)
            ax_row[1].set_title(f"attention rollout (entropy {row.attention_entropy:.2f})\n"
                                f"{rollout_scale.range_text()}", fontsize=9)
            ax_row[2].imshow(times_uniform(rollout_maps[row.image_id]), cmap="hot", norm=rollout_scale.norm(),
                             interpolation="nearest")
            add_colorbar(fig, ax_row[2], rollout_scale, "hot", label="× uniform")
            ax_row[2].set_title("rollout map (patch grid, min-max)", fontsize=9)
            ax_row[2].axis("off")
            selection = getattr(row, "selection", None)
            if isinstance(selection, str) and selection:
                ax_row[0].text(-0.08, 0.5, selection, transform=ax_row[0].transAxes, rotation=90, ha="right",
                               va="center", fontsize=10, fontweight="bold")
        fig.suptitle("Attention rollout (Abnar & Zuidema 2020) vs last-layer CLS attention, on the model's crop",
                     fontsize=12)
        fig.tight_layout(rect=(0.03, 0, 0.97, 0.97), w_pad=4.0)
        return save_figure(fig, out_path, dpi=dpi, footer=footer), skipped


# --------------------------------------------------------------------------- 7: ablation


def render_ablation(frame: pd.DataFrame, out_path: str | os.PathLike, *, note: str | None = None,
                    dpi: int = 100, footer: str | None = None) -> Path:
    """Histograms of the CLS-embedding cosine distance after masking the top-k attended patches vs k
    random patches, and their per-image difference."""
    with new_figure((14, 5), dpi=dpi) as fig:
        axes = fig.subplots(1, 2)
        if frame.empty:
            for ax in axes:
                _no_data(ax, note or "no sampled images")
        else:
            top = frame["cosine_distance_topk"].to_numpy(float)
            rand = frame["cosine_distance_random"].to_numpy(float)
            hi = float(np.nanmax(np.concatenate([top, rand]))) or 1e-6
            bins = np.linspace(0, hi * 1.05, 30)
            axes[0].hist(top, bins=bins, alpha=0.7, color="#d62728", label=f"top-k masked (mean {top.mean():.4f})")
            axes[0].hist(rand, bins=bins, alpha=0.7, color="#7f7f7f", label=f"random-k masked (mean {rand.mean():.4f})")
            axes[0].set_xlabel("cosine distance to the original CLS embedding")
            axes[0].set_ylabel("images")
            axes[0].legend(fontsize=8)
            axes[0].set_title(f"Masking k = {int(frame['ablation_k'].iloc[0])} patches (n = {len(frame):,} images)")
            diff = top - rand
            axes[1].hist(diff, bins=30, color="#4c72b0", edgecolor="white")
            axes[1].axvline(0, color="0.3", linestyle="--")
            axes[1].set_xlabel("top-k distance - random-k distance (> 0: attended patches matter more)")
            axes[1].set_ylabel("images")
            axes[1].set_title(f"Per image: top-k beats random in {np.mean(diff > 0):.0%} of images")
        fig.suptitle("Ablation: does masking the most attended patches change the embedding more than random?",
                     fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


__all__: Sequence[str] = (
    "baselines_markdown",
    "render_ablation",
    "render_artifacts",
    "render_baselines",
    "render_head_maps",
    "render_layer_profile",
    "render_rollout_gallery",
    "render_spatial",
)

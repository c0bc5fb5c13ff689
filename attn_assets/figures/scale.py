"""Attention maps in a unit that means something: × uniform, a patch's attention times N.

The seed draws every heatmap min-max normalised, so a map that is uniform to within 1e-6 looks as structured
as a sharply peaked one. The figures keep that look, and beside every heatmap a colour bar in × uniform units
(1 = the share each of the N patches gets when the CLS token attends to all patches alike; the CLS row keeps
the CLS column's own share out, so a uniform map over N + 1 tokens reads N / (N + 1), just under 1) and the
map's range printed, and a near-uniform map is marked as such.

Near-uniform: the map's max - min is below ``NEAR_UNIFORM_RANGE`` = 0.5 × uniform. The threshold comes from
maps measured here (CPU, fp32, `seed_reference` on six synthetic street scenes each): untrained models spread
0.04-0.05 (random:vit-b16, 196 patches) and 0.12-0.19 (random:tiny, 36 patches), random:streetclip about 6e-4
(uniform to ~1e-6 of 1/576); the test suite's peaked tiny model 8.8-14.2. 0.5 lies 2.6x above the widest
untrained spread and 17x below the narrowest peaked one: a near-uniform map has no patch that draws even half
the uniform share more than another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .geometry import as_grid

#: max - min below this (in × uniform) marks a map near-uniform; see the module docstring for the numbers.
NEAR_UNIFORM_RANGE = 0.5
UNIT = "× uniform"
UNIT_LABEL = "attention × N (× uniform)"


@dataclass(frozen=True)
class MapScale:
    """A map's range in × uniform units. low, high: its smallest and largest patch; num_patches: N."""

    low: float
    high: float
    num_patches: int

    @property
    def span(self) -> float:
        return self.high - self.low

    @property
    def near_uniform(self) -> bool:
        return bool(self.span < NEAR_UNIFORM_RANGE)

    def range_text(self) -> str:
        """'range 0.002-9.52 × uniform', with 'near-uniform' appended for such a map."""
        text = f"range {_num(self.low)}–{_num(self.high)} {UNIT}"
        return f"{text}, near-uniform" if self.near_uniform else text

    def norm(self) -> Normalize:
        """The colour scale of the seed's min-max look, in × uniform (a flat map gets a 1e-9-wide scale)."""
        return Normalize(self.low, self.high if self.high > self.low else self.low + 1e-9)


def times_uniform(attn_map: np.ndarray) -> np.ndarray:
    """A CLS map [grid_h, grid_w] (or flat, square length) times N = its number of patches, as float64."""
    grid = as_grid(attn_map)
    return grid * grid.size


def map_scale(attn_map: np.ndarray) -> MapScale:
    """The range of ``attn_map`` in × uniform over its finite patches. Raises ValueError when none is finite."""
    values = times_uniform(attn_map)
    finite = values[np.isfinite(values)]
    if not finite.size:
        raise ValueError("attention map has no finite value")
    return MapScale(float(finite.min()), float(finite.max()), int(values.size))


def shared_scale(maps: list[np.ndarray]) -> MapScale:
    """One range covering several maps (e.g. the heads of head_maps.png), in × uniform."""
    scales = [map_scale(m) for m in maps]
    if not scales:
        raise ValueError("no maps to scale")
    return MapScale(min(s.low for s in scales), max(s.high for s in scales), scales[0].num_patches)


def add_colorbar(fig: Figure, ax: Axes, scale: MapScale, cmap: str, label: str = UNIT_LABEL,
                 *, width: float = 0.045, pad: float = 0.02) -> Colorbar:
    """A colour bar in × uniform at the right of ``ax`` (an inset: ``ax`` keeps its size)."""
    cax = ax.inset_axes((1.0 + pad, 0.0, width, 1.0))
    bar = fig.colorbar(ScalarMappable(norm=scale.norm(), cmap=cmap), cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if scale.span < 1e-3:  # ticks a few 1e-6 apart say nothing; the title prints the range
        bar.set_ticks([scale.norm().vmin, scale.norm().vmax], labels=[_num(scale.low), _num(scale.high)])
    return bar


def mark_near_uniform(ax: Axes, scale: MapScale, fontsize: float = 9) -> None:
    """Write 'near-uniform' across ``ax`` when ``scale`` is: the min-max colours then show noise, not structure."""
    if not scale.near_uniform:
        return
    ax.text(0.5, 0.5, f"near-uniform\nmax − min = {scale.span:.2g} {UNIT}\n(colours stretch noise)",
            transform=ax.transAxes, ha="center", va="center", fontsize=fontsize, color="black",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.5"})


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2g}"

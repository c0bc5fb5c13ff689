"""A deterministic demo image set in the OpenStreetView-5M layout (no download needed).

``write_demo_data(out_dir)`` draws street-like scenes with PIL (sky gradient, road in
perspective with lane markings, buildings with windows, trees, a road sign, sometimes a car)
in two scene variants (column ``scene_variant``):

* ``styled``: everything is styled per country (drive side, vegetation, ground and sky colour,
  centre line, the country's sign on the driving side, which may fall outside the model's crop);
* ``sign_only``: the country's sign is the ONLY thing that tells the countries apart. Sky, ground,
  vegetation, buildings, drive side and centre line are drawn at random for every country, and
  the sign lies anywhere inside the central ``min(w, h)`` square (the view of a shortest-edge
  resize followed by a centre crop of the same size), at least ``CROP_MARGIN`` pixels from its
  edges. Every other image is ``sign_only``.

Every country has its own sign design (``SIGNS``: shape x colour x glyph). ``cue_box`` records,
for every image, the sign FACE's bounding box (the shape and its glyph; not the post) as
``"x0,y0,x1,y1"`` in original-image pixels: pixel edges, ``x1``/``y1`` exclusive, clipped to the
image; empty when the face lies wholly outside the image. The demo's planted evidence: the
localization benchmark maps it into the model's crop. ``write_demo_data`` writes

* ``out_dir/images/test/00/<id>.jpg`` (OSV-5M's ``images/<split>/<NN>/<id>.jpg`` layout),
* ``out_dir/test.csv``: an OSV-5M-style metadata manifest, then ``DEMO_EXTRA_COLUMNS``
  (``scene_variant``, ``cue_box``), which the manifest reader keeps as extra columns
  (``images.extra`` in the warehouse).

``draw_example`` draws one image of either variant for a country (the demo model's training
data comes from it, with seeds the demo set does not use).

Same bytes on every run for the same arguments (seeded ``random.Random``, fixed JPEG settings,
no timestamps). Two rows exercise country resolution: one with an empty ``country`` but a
``unique_country``, one with both empty (coordinates in Paris, resolved by reverse geocoding).
Namibia ("NA") is included on purpose.

The images are synthetic: they exercise the pipeline and the demo model, they say nothing about
StreetCLIP.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_SPLIT = "test"
DEMO_SUBDIR = "00"
JPEG_QUALITY = 90
#: Scene variants, in the order they alternate in the demo set.
SCENE_VARIANTS: tuple[str, ...] = ("styled", "sign_only")
#: Pixels between a sign_only sign's face and the central square's edges (absorbs the processor's integer
#: resize and crop offsets, at most about one original pixel per side for the demo's sizes).
CROP_MARGIN = 6
#: Half-size of a sign_only sign's face, as a share of the central square's side (drawn uniformly in this range).
SIGN_ONLY_HALF_SIZE = (0.06, 0.10)

#: OSV-5M metadata header (the demo writes these columns in this order).
OSV_COLUMNS: tuple[str, ...] = (
    "id",
    "latitude",
    "longitude",
    "thumb_original_url",
    "country",
    "sequence",
    "captured_at",
    "lon_bin",
    "lat_bin",
    "cell",
    "land_cover",
    "road_index",
    "drive_side",
    "climate",
    "soil",
    "dist_sea",
    "region",
    "sub-region",
    "city",
    "unique_region",
    "unique_sub-region",
    "unique_city",
    "unique_country",
    "creator_username",
    "creator_id",
)
#: Columns the demo writes after the OSV-5M ones (kept by the manifest reader as extra columns).
DEMO_EXTRA_COLUMNS: tuple[str, ...] = ("scene_variant", "cue_box")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SignDesign:
    """A country's road sign: ``shape`` (circle, octagon, diamond, square, triangle, yield), fill ``colour``
    and ``glyph`` drawn on the face (ring, bar, dot, cross, arrow)."""

    shape: str
    colour: tuple[int, int, int]
    glyph: str


@dataclass(frozen=True)
class CountryStyle:
    code: str
    drive_left: bool
    sign: SignDesign
    sky_top: tuple[int, int, int]
    sky_bottom: tuple[int, int, int]
    ground: tuple[int, int, int]
    vegetation: float  # 0..1 tree density
    buildings: float  # 0..1 building density
    centre_line: tuple[int, int, int]
    climate: int
    land_cover: int
    cities: tuple[tuple[str, str, str, float, float, float], ...]  # city, region, sub-region, lat, lon, dist_sea km


STYLES: tuple[CountryStyle, ...] = (
    CountryStyle("FR", False, SignDesign("circle", (200, 20, 30),
                 "ring"), (95, 150, 215), (190, 215, 240), (95, 135, 70), 0.5, 0.7,
                 (245, 245, 245), 15, 50,
                 (("Paris", "Ile-de-France", "Paris", 48.8566, 2.3522, 150.0),
                  ("Lyon", "Auvergne-Rhone-Alpes", "Rhone", 45.7640, 4.8357, 250.0),
                  ("Toulouse", "Occitanie", "Haute-Garonne", 43.6047, 1.4442, 140.0),
                  ("Dijon", "Bourgogne-Franche-Comte", "Cote-d'Or", 47.3220, 5.0415, 300.0))),
    CountryStyle("US", False, SignDesign("diamond", (250, 200, 20),
                 "cross"), (80, 140, 230), (180, 210, 245), (120, 140, 80), 0.35, 0.5,
                 (245, 200, 30), 7, 40,
                 (("Denver", "Colorado", "Denver County", 39.7392, -104.9903, 1400.0),
                  ("Kansas City", "Missouri", "Jackson County", 39.0997, -94.5786, 1000.0),
                  ("Chicago", "Illinois", "Cook County", 41.8781, -87.6298, 1100.0),
                  ("Dallas", "Texas", "Dallas County", 32.7767, -96.7970, 400.0))),
    CountryStyle("JP", True, SignDesign("circle", (30, 80, 200),
                 "arrow"), (120, 165, 220), (215, 225, 240), (90, 120, 80), 0.2, 0.9,
                 (245, 245, 245), 14, 50,
                 (("Tokyo", "Tokyo", "Chiyoda", 35.6762, 139.6503, 10.0),
                  ("Osaka", "Osaka", "Kita", 34.6937, 135.5023, 5.0),
                  ("Nagoya", "Aichi", "Naka", 35.1815, 136.9066, 15.0),
                  ("Sapporo", "Hokkaido", "Chuo", 43.0618, 141.3545, 10.0))),
    CountryStyle("BR", False, SignDesign("diamond", (30, 150, 60),
                 "bar"), (60, 150, 235), (200, 230, 250), (70, 140, 50), 0.85, 0.4,
                 (245, 200, 30), 1, 10,
                 (("Sao Paulo", "Sao Paulo", "Sao Paulo", -23.5505, -46.6333, 60.0),
                  ("Belo Horizonte", "Minas Gerais", "Belo Horizonte", -19.9167, -43.9345, 350.0),
                  ("Brasilia", "Distrito Federal", "Brasilia", -15.7939, -47.8828, 900.0),
                  ("Goiania", "Goias", "Goiania", -16.6869, -49.2648, 900.0))),
    CountryStyle("AU", True, SignDesign("square", (250, 200, 20),
                 "dot"), (70, 140, 235), (195, 220, 245), (185, 160, 105), 0.3, 0.35,
                 (245, 245, 245), 6, 30,
                 (("Canberra", "Australian Capital Territory", "Canberra", -35.2809, 149.1300, 110.0),
                  ("Alice Springs", "Northern Territory", "Alice Springs", -23.6980, 133.8807, 1000.0),
                  ("Melbourne", "Victoria", "Melbourne", -37.8136, 144.9631, 5.0),
                  ("Dubbo", "New South Wales", "Dubbo", -32.2569, 148.6011, 350.0))),
    CountryStyle("ZA", True, SignDesign("triangle", (210, 30, 30),
                 "dot"), (85, 150, 230), (200, 225, 245), (150, 150, 90), 0.3, 0.45,
                 (245, 245, 245), 6, 30,
                 (("Johannesburg", "Gauteng", "Johannesburg", -26.2041, 28.0473, 500.0),
                  ("Pretoria", "Gauteng", "Tshwane", -25.7479, 28.2293, 500.0),
                  ("Bloemfontein", "Free State", "Mangaung", -29.0852, 26.1596, 450.0),
                  ("Kimberley", "Northern Cape", "Sol Plaatje", -28.7282, 24.7499, 550.0))),
    CountryStyle("NA", True, SignDesign("yield", (240, 120, 20),
                 "bar"), (40, 110, 220), (180, 210, 240), (215, 175, 120), 0.05, 0.2,
                 (245, 245, 245), 4, 60,
                 (("Windhoek", "Khomas", "Windhoek", -22.5609, 17.0658, 300.0),
                  ("Otjiwarongo", "Otjozondjupa", "Otjiwarongo", -20.4637, 16.6477, 280.0),
                  ("Keetmanshoop", "Karas", "Keetmanshoop", -26.5833, 18.1333, 320.0),
                  ("Rundu", "Kavango East", "Rundu", -17.9333, 19.7667, 700.0))),
    CountryStyle("GB", True, SignDesign("octagon", (200, 20, 30),
                 "bar"), (150, 165, 185), (200, 205, 215), (80, 125, 65), 0.6, 0.65,
                 (245, 245, 245), 14, 40,
                 (("London", "England", "Greater London", 51.5074, -0.1278, 60.0),
                  ("Birmingham", "England", "West Midlands", 52.4862, -1.8904, 110.0),
                  ("Leeds", "England", "West Yorkshire", 53.8008, -1.5491, 90.0),
                  ("Oxford", "England", "Oxfordshire", 51.7520, -1.2577, 100.0))),
    CountryStyle("IN", True, SignDesign("square", (30, 80, 200),
                 "ring"), (150, 175, 200), (220, 215, 200), (165, 140, 95), 0.45, 0.6,
                 (245, 245, 245), 2, 40,
                 (("Delhi", "Delhi", "New Delhi", 28.6139, 77.2090, 900.0),
                  ("Jaipur", "Rajasthan", "Jaipur", 26.9124, 75.7873, 600.0),
                  ("Nagpur", "Maharashtra", "Nagpur", 21.1458, 79.0882, 700.0),
                  ("Bhopal", "Madhya Pradesh", "Bhopal", 23.2599, 77.4126, 500.0))),
)


def _mix(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _jitter(rng: random.Random, colour, amount=12):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def _draw_background(style: CountryStyle, width: int, height: int, rng: random.Random):
    """The street without its sign: (image, drawing context, horizon row, road_edge(y, side) function)."""
    horizon = int(height * rng.uniform(0.42, 0.52))
    # sky gradient (numpy, then PIL)
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    top = np.array(_jitter(rng, style.sky_top), dtype=np.float32)
    bottom = np.array(_jitter(rng, style.sky_bottom), dtype=np.float32)
    sky = top * (1 - t) + bottom * t
    arr = np.empty((height, width, 3), dtype=np.uint8)
    arr[:horizon] = np.round(sky).astype(np.uint8)[:, None, :]
    ground = np.array(_jitter(rng, style.ground, 10), dtype=np.float32)
    g = np.linspace(0.85, 1.05, height - horizon, dtype=np.float32)[:, None]
    arr[horizon:] = np.clip(ground * g, 0, 255).astype(np.uint8)[:, None, :]
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)

    # a few clouds
    for _ in range(rng.randint(0, 4)):
        cx, cy = rng.randint(0, width), rng.randint(5, max(6, horizon // 2))
        for k in range(3):
            r = rng.randint(12, 30)
            d.ellipse([cx + k * r - r, cy - r // 2, cx + k * r + r, cy + r // 2], fill=(245, 245, 248))

    vx = int(width * rng.uniform(0.4, 0.6))
    road_half_bottom = width * rng.uniform(0.38, 0.5)
    road_half_top = width * 0.012
    road_colour = _jitter(rng, (85, 85, 90), 8)

    def road_edge(y: float, side: int) -> float:
        f = (y - horizon) / max(1, height - horizon)
        return vx + side * (road_half_top + (road_half_bottom - road_half_top) * f)

    # buildings on both sides, far to near
    n_buildings = int(2 + style.buildings * 10)
    for side in (-1, 1):
        for k in range(n_buildings):
            f = (k + 1) / (n_buildings + 1)  # depth: 0 far .. 1 near
            y_base = horizon + f * (height - horizon) * 0.55
            x_edge = road_edge(y_base, side) + side * (8 + 30 * f)
            bw = (30 + 140 * f) * rng.uniform(0.7, 1.2)
            bh = (40 + 260 * f) * rng.uniform(0.6, 1.3) * (0.5 + style.buildings)
            x0, x1 = sorted((x_edge, x_edge + side * bw))
            y0 = y_base - bh
            colour = _jitter(rng, rng.choice([(180, 170, 160), (200, 190, 170), (150, 140, 135), (210, 200, 190)]), 25)
            d.rectangle([x0, y0, x1, y_base], fill=colour, outline=_mix(colour, (0, 0, 0), 0.4))
            win = max(3, int(5 + 10 * f))
            wc = _jitter(rng, (90, 110, 140), 20)
            yy = y0 + win
            while yy + win < y_base - win:
                xx = x0 + win
                while xx + win < x1 - win / 2:
                    d.rectangle([xx, yy, xx + win * 0.8, yy + win], fill=wc)
                    xx += win * 2
                yy += win * 2

    # road with perspective, edge lines and dashed centre line
    d.polygon([(road_edge(horizon, -1), horizon), (road_edge(horizon, 1), horizon),
               (road_edge(height, 1), height), (road_edge(height, -1), height)], fill=road_colour)
    for side in (-1, 1):
        d.line([(road_edge(horizon, side * 0.95), horizon), (road_edge(height, side * 0.95), height)],
               fill=(235, 235, 235), width=3)
    steps = 14
    for k in range(steps):
        if k % 2:
            continue
        y0 = horizon + (height - horizon) * (k / steps) ** 1.6
        y1 = horizon + (height - horizon) * ((k + 1) / steps) ** 1.6
        w0 = 1 + 6 * (y0 - horizon) / (height - horizon)
        w1 = 1 + 6 * (y1 - horizon) / (height - horizon)
        d.polygon([(vx - w0, y0), (vx + w0, y0), (vx + w1, y1), (vx - w1, y1)], fill=style.centre_line)

    # trees / vegetation along the roadside
    n_trees = int(style.vegetation * 14)
    for _ in range(n_trees):
        side = rng.choice((-1, 1))
        f = rng.uniform(0.05, 1.0)
        y = horizon + f * (height - horizon) * 0.7
        x = road_edge(y, side) + side * rng.uniform(10, 60) * (0.3 + f)
        r = (8 + 45 * f) * rng.uniform(0.7, 1.3)
        d.rectangle([x - r * 0.12, y - r * 0.8, x + r * 0.12, y], fill=(90, 65, 40))
        d.ellipse([x - r, y - r * 2.4, x + r, y - r * 0.6], fill=_jitter(rng, (50, 110, 45), 25))
    # low vegetation strip
    if style.vegetation > 0.3:
        for _ in range(int(style.vegetation * 40)):
            x = rng.uniform(0, width)
            y = rng.uniform(horizon, height)
            if road_edge(y, -1) - 5 < x < road_edge(y, 1) + 5:
                continue
            r = rng.uniform(3, 10)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (60, 120, 50), 20))

    # a car in the driving lane
    if rng.random() < 0.6:
        lane = -1 if style.drive_left else 1
        f = rng.uniform(0.25, 0.6)
        y = horizon + f * (height - horizon)
        cx = (vx + road_edge(y, lane)) / 2
        cw, ch = 120 * f + 10, 60 * f + 6
        colour = _jitter(rng, rng.choice([(180, 30, 30), (30, 60, 160), (230, 230, 230), (40, 40, 40)]), 15)
        d.rounded_rectangle([cx - cw / 2, y - ch, cx + cw / 2, y], radius=max(1, int(ch / 5)), fill=colour)
        d.rectangle([cx - cw * 0.35, y - ch * 0.95, cx + cw * 0.35, y - ch * 0.55], fill=(150, 190, 220))
    return img, d, horizon, road_edge


def _clip_box(box: tuple[float, float, float, float], width: int, height: int) -> Box | None:
    """Pixel edges (floor, floor, ceil, ceil) of a float box, clipped to the image; None when nothing is left."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def sign_face_extent(shape: str, x: float, cy: float, s: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the face of a sign of ``shape`` centred at (x, cy) with half-size ``s`` (pixels)."""
    if shape == "triangle":
        return x - s, cy - s, x + s, cy + s * 0.8
    if shape == "yield":
        return x - s, cy - s * 0.8, x + s, cy + s
    if shape == "square":
        return x - s * 0.85, cy - s * 0.85, x + s * 0.85, cy + s * 0.85
    return x - s, cy - s, x + s, cy + s


def _draw_sign(d: ImageDraw.ImageDraw, sign: SignDesign, x: float, cy: float, s: float, post: float) -> None:
    """The post (``post`` pixels down from the face's centre) and the face with its glyph."""
    d.rectangle([x - 2, cy, x + 2, cy + post], fill=(120, 120, 125))
    white, black = (245, 245, 245), (20, 20, 20)
    if sign.shape == "circle":
        d.ellipse([x - s, cy - s, x + s, cy + s], fill=sign.colour)
    elif sign.shape == "octagon":
        d.polygon([(x + s * math.cos(math.pi / 8 + k * math.pi / 4), cy + s * math.sin(math.pi / 8 + k * math.pi / 4))
                   for k in range(8)], fill=sign.colour)
    elif sign.shape == "diamond":
        d.polygon([(x, cy - s), (x + s, cy), (x, cy + s), (x - s, cy)], fill=sign.colour, outline=black)
    elif sign.shape == "square":
        d.rectangle([x - s * 0.85, cy - s * 0.85, x + s * 0.85, cy + s * 0.85], fill=sign.colour, outline=black)
    elif sign.shape == "triangle":
        d.polygon([(x, cy - s), (x + s, cy + s * 0.8), (x - s, cy + s * 0.8)], fill=sign.colour)
    elif sign.shape == "yield":
        d.polygon([(x - s, cy - s * 0.8), (x + s, cy - s * 0.8), (x, cy + s)], fill=sign.colour)
    else:
        raise ValueError(f"unknown sign shape {sign.shape!r}; use one of circle, octagon, diamond, square, "
                         "triangle, yield")
    g = s * 0.4
    if sign.glyph == "ring":
        d.ellipse([x - s * 0.55, cy - s * 0.55, x + s * 0.55, cy + s * 0.55], fill=white)
    elif sign.glyph == "bar":
        d.rectangle([x - s * 0.55, cy - s * 0.15, x + s * 0.55, cy + s * 0.15], fill=white)
    elif sign.glyph == "dot":
        d.ellipse([x - g, cy - g, x + g, cy + g], fill=black)
    elif sign.glyph == "cross":
        d.line([(x - g, cy - g), (x + g, cy + g)], fill=black, width=max(2, int(s * 0.15)))
        d.line([(x - g, cy + g), (x + g, cy - g)], fill=black, width=max(2, int(s * 0.15)))
    elif sign.glyph == "arrow":
        d.polygon([(x, cy - s * 0.6), (x + s * 0.45, cy + s * 0.3), (x - s * 0.45, cy + s * 0.3)], fill=white)
    else:
        raise ValueError(f"unknown sign glyph {sign.glyph!r}; use one of ring, bar, dot, cross, arrow")


def draw_scene(style: CountryStyle, width: int, height: int, rng: random.Random) -> tuple[Image.Image, Box | None]:
    """One ``styled`` street scene of ``style``'s country and its sign's face box (see `sign_face_extent`;
    pixel edges clipped to the image, None when the face is wholly outside it)."""
    img, d, horizon, road_edge = _draw_background(style, width, height, rng)
    side = -1 if style.drive_left else 1
    f = rng.uniform(0.45, 0.75)
    y = horizon + f * (height - horizon)
    x = road_edge(y, side) + side * 25
    pole_h = 180 * f + 20
    s = 28 * f + 8
    _draw_sign(d, style.sign, x, y - pole_h, s, pole_h)
    return img, _clip_box(sign_face_extent(style.sign.shape, x, y - pole_h, s), width, height)


def random_background_style(rng: random.Random) -> CountryStyle:
    """A style whose sky, ground, vegetation, buildings, drive side and centre line are each drawn from a
    random country: nothing in it belongs to one country (the sign is chosen separately)."""
    pick = lambda: rng.choice(STYLES)  # noqa: E731
    sky = pick()
    return replace(
        pick(), drive_left=rng.random() < 0.5, sky_top=sky.sky_top, sky_bottom=sky.sky_bottom, ground=pick().ground,
        vegetation=pick().vegetation, buildings=pick().buildings, centre_line=pick().centre_line,
    )


def draw_sign_only_scene(sign: SignDesign, width: int, height: int, rng: random.Random) -> tuple[Image.Image, Box]:
    """A ``sign_only`` scene: a random background (`random_background_style`) and ``sign`` at a random place
    whose face lies inside the central ``min(width, height)`` square, ``CROP_MARGIN`` pixels from its edges.
    Returns the image and the face's box (pixel edges, original pixels)."""
    img, d, horizon, _ = _draw_background(random_background_style(rng), width, height, rng)
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    s = rng.uniform(*SIGN_ONLY_HALF_SIZE) * side
    x = rng.uniform(left + s + CROP_MARGIN, left + side - s - CROP_MARGIN)
    cy = rng.uniform(top + s + CROP_MARGIN, top + side - s - CROP_MARGIN)
    _draw_sign(d, sign, x, cy, s, max(0.0, height - cy) * rng.uniform(0.3, 1.0))
    box = _clip_box(sign_face_extent(sign.shape, x, cy, s), width, height)
    assert box is not None  # the face lies inside the image by construction
    return img, box


def draw_example(country: int, variant: str, width: int, height: int, rng: random.Random
                 ) -> tuple[Image.Image, Box | None]:
    """One demo image of ``STYLES[country]`` in ``variant`` (see `SCENE_VARIANTS`) and its sign face's box."""
    if variant == "styled":
        return draw_scene(STYLES[country], width, height, rng)
    if variant == "sign_only":
        return draw_sign_only_scene(STYLES[country].sign, width, height, rng)
    raise ValueError(f"unknown scene variant {variant!r}; use one of {', '.join(SCENE_VARIANTS)}")


def box_text(box: Box | None) -> str:
    """``"x0,y0,x1,y1"`` (the manifest's ``cue_box``), or "" for no box; read back by
    `attn_assets.core.localization.parse_box`."""
    return "" if box is None else ",".join(str(v) for v in box)


def demo_image_size(i: int, rng: random.Random) -> tuple[int, int]:
    """(width, height) of the demo's ``i``-th image: 512 high, mostly landscape about 792 wide, every 12th square
    and every 12th portrait (384 x 512)."""
    if i % 12 == 5:
        return 512, 512  # square
    if i % 12 == 11:
        return 384, 512  # portrait
    return 792 + 8 * rng.randint(-6, 6), 512


def demo_rows(n_images: int = 36, seed: int = 0) -> list[dict[str, str]]:
    """The manifest rows (without drawing anything: ``cue_box`` is left empty; `write_demo_data` fills it)."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    used: set[int] = set()
    for i in range(n_images):
        style = STYLES[i % len(STYLES)]
        city, region, sub, lat, lon, dist = style.cities[(i // len(STYLES)) % len(style.cities)]
        image_id = rng.randrange(10**15, 10**16)
        while image_id in used:
            image_id = rng.randrange(10**15, 10**16)
        used.add(image_id)
        lat_j = round(lat + rng.uniform(-0.02, 0.02), 6)
        lon_j = round(lon + rng.uniform(-0.02, 0.02), 6)
        creator = rng.randrange(10**14, 10**15)
        row = {
            "id": str(image_id),
            "latitude": repr(lat_j),
            "longitude": repr(lon_j),
            "thumb_original_url": f"https://demo.invalid/osv5m/{image_id}/thumb_original.jpg",
            "country": style.code,
            "sequence": f"seq{rng.getrandbits(64):016x}",
            "captured_at": str(1_500_000_000_000 + rng.randrange(0, 200_000_000_000)),
            "lon_bin": str(int((lon + 180) / 360 * 100)),
            "lat_bin": str(int((lat + 90) / 180 * 100)),
            "cell": f"({int((lon + 180) / 360 * 100)}, {int((lat + 90) / 180 * 100)})",
            "land_cover": str(style.land_cover),
            "road_index": f"{rng.uniform(0, 10):.3f}",
            "drive_side": "1" if style.drive_left else "0",
            "climate": str(style.climate),
            "soil": str(rng.randint(1, 15)),
            "dist_sea": f"{dist + rng.uniform(-5, 5):.3f}",
            "region": region,
            "sub-region": sub,
            "city": city,
            "unique_region": f"{region}_{style.code}",
            "unique_sub-region": f"{sub}_{region}_{style.code}",
            "unique_city": f"{city}_{sub}_{region}_{style.code}",
            "unique_country": style.code,
            "creator_username": f"demo_user_{creator % 97:02d}",
            "creator_id": str(creator),
            "scene_variant": SCENE_VARIANTS[i % len(SCENE_VARIANTS)],
            "cue_box": "",
        }
        rows.append(row)
    # country resolution: one row falls back to unique_country, one to reverse geocoding (Paris)
    rows[0]["country"] = ""  # FR, Paris: neither code given -> reverse geocoding
    rows[0]["unique_country"] = ""
    if n_images > 2:
        rows[2]["country"] = ""  # JP: country empty, unique_country given
    return rows


def write_demo_data(out_dir: Path, n_images: int = 36, seed: int = 0) -> Path:
    """Write the demo images and ``test.csv``; return the manifest path."""
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images" / DEMO_SPLIT / DEMO_SUBDIR
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = demo_rows(n_images, seed)
    for i, row in enumerate(rows):
        rng = random.Random(f"{seed}:{row['id']}")
        width, height = demo_image_size(i, rng)
        img, box = draw_example(i % len(STYLES), row["scene_variant"], width, height, rng)
        row["cue_box"] = box_text(box)
        target = image_dir / f"{row['id']}.jpg"
        tmp = target.with_suffix(".jpg.tmp")
        img.save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=0)
        tmp.replace(target)
    manifest = out_dir / f"{DEMO_SPLIT}.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(OSV_COLUMNS + DEMO_EXTRA_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    return manifest

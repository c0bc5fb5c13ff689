"""attn_assets.catalog.countries: the country of a coordinate, NULL at sea, one answer per meridian.

Every point below was checked by hand (map coordinates of the named place, the timezone polygon it
falls in, the nearest GeoNames place); the expected codes are exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attn_assets.catalog import countries
from attn_assets.catalog.countries import (
    SOURCE_AT_SEA,
    SOURCE_GEOCODED,
    at_sea,
    country_name,
    normalize_longitude,
    resolve_countries,
    reverse_geocode,
)
from attn_assets.catalog.manifest import COUNTRY_SOURCES, read_manifest

# (latitude, longitude) in degrees -> expected alpha-2 code, None = at sea.
LAND_NEAR_COAST = {
    "Nice, Promenade des Anglais beach": ((43.6947, 7.2636), "FR"),
    "Brighton, head of the Palace Pier (over the sea)": ((50.8150, -0.1366), "GB"),
    "Cape Town, V&A Waterfront": ((-33.9036, 18.4207), "ZA"),
    "Funafuti atoll, Tuvalu (islets ~100 m wide)": ((-8.5211, 179.1983), "TV"),
    "Male, Maldives": ((4.1755, 73.5093), "MV"),
}
OPEN_SEA = {
    "Southern Ocean (reverse_geocoder: Saint Helena)": (-60.0, 0.0),
    "mid-Atlantic (reverse_geocoder: Brazil)": (0.0, -30.0),
    "mid-Pacific, 1,900 km from Hawaii": (10.0, -140.0),
    "North Pole (reverse_geocoder: Svalbard)": (90.0, 0.0),
}
REMOTE_LAND = {
    "South Pole": ((-90.0, 0.0), "AQ"),
    "Pristina": ((42.6629, 21.1655), "XK"),
    "Windhoek": ((-22.5609, 17.0658), "NA"),
    "Sossusvlei, Namib desert (166 km from the nearest town)": ((-24.7275, 15.3426), "NA"),
    "Tanezrouft, Algerian Sahara": ((24.0, 1.0), "DZ"),
    "Tenere, Niger": ((18.5, 10.5), "NE"),
    "interior Greenland ice sheet (455 km from a town)": ((72.0, -40.0), "GL"),
    "Australian outback near Uluru": ((-25.0, 131.0), "AU"),
}


def _one(lat: float, lon: float):
    r = resolve_countries([lat], [lon])
    return r.country[0], r.source[0]


@pytest.mark.parametrize("name", list(LAND_NEAR_COAST))
def test_beaches_piers_and_small_islands_keep_their_country(name):
    (lat, lon), code = LAND_NEAR_COAST[name]
    assert _one(lat, lon) == (code, SOURCE_GEOCODED)


@pytest.mark.parametrize("name", list(OPEN_SEA))
def test_open_sea_gets_no_country(name):
    lat, lon = OPEN_SEA[name]
    assert _one(lat, lon) == (None, SOURCE_AT_SEA)


@pytest.mark.parametrize("name", list(REMOTE_LAND))
def test_remote_land_far_from_any_town_keeps_its_country(name):
    (lat, lon), code = REMOTE_LAND[name]
    assert _one(lat, lon) == (code, SOURCE_GEOCODED)


def test_antarctica_is_aq_south_of_60s_even_when_the_nearest_station_is_elsewhere():
    # The Antarctic Peninsula: the nearest place with 1,000 inhabitants is in Chile or Argentina.
    r = resolve_countries([-64.5, -75.0], [-61.0, 0.0])
    assert r.country.tolist() == ["AQ", "AQ"]
    assert r.place[0] != "McMurdo Station"


def test_documented_limits_stay_documented():
    """Known wrong answers (module docstring): change the docstring when one of these changes."""
    # Algerian Sahara ~9 km north of the Niger border and ~110 km from Libya: the nearest town is Ghat (LY).
    # The timezone polygon is Africa/Algiers; nearest-place borders are wrong in empty border regions.
    assert _one(23.0, 11.0) == ("LY", SOURCE_GEOCODED)
    # Unclaimed Marie Byrd Land lies in a nautical Etc/GMT+8 zone: land, but reported at sea.
    assert _one(-80.0, -120.0) == (None, SOURCE_AT_SEA)
    assert "Ghat" in countries.__doc__ and "Marie Byrd" in countries.__doc__


@pytest.mark.parametrize("lat, code", [(-16.80, "FJ"), (67.0, "RU"), (66.0, "RU")])
def test_the_antimeridian_is_one_meridian(lat, code):
    # (-16.80, ±180): Taveuni, Fiji, where reverse_geocoder's flat search gave Fiji at 180 and Wallis and
    # Futuna at -180. (67, ±180) and (66, ±180): Chukotka, Russia.
    r = resolve_countries([lat, lat, lat, lat], [180.0, -180.0, 179.9999, -179.9999])
    assert r.country.tolist() == [code] * 4
    assert r.place[0] == r.place[1] and r.place_km[0] == pytest.approx(r.place_km[1])


def test_normalize_longitude():
    got = normalize_longitude([180.0, -180.0, 190.0, -190.0, 540.0, 0.0, 179.5])
    assert got.tolist() == [-180.0, -180.0, -170.0, 170.0, -180.0, 0.0, 179.5]


def test_distances_are_great_circle_km():
    r = resolve_countries([48.8566], [2.3522])  # Paris, Notre-Dame
    assert r.country[0] == "FR" and r.place_km[0] < 5.0
    north_pole = resolve_countries([90.0], [123.0])
    assert north_pole.place[0] == "Longyearbyen"
    assert north_pole.place_km[0] == pytest.approx((90.0 - 78.2232) * np.pi / 180 * 6371.0088, rel=1e-3)


def test_missing_coordinates_get_nothing_and_bad_ones_raise():
    r = resolve_countries([np.nan, None, 48.8566], [2.0, 2.0, np.nan])
    assert r.country.tolist() == [None, None, None] and r.source.tolist() == [None, None, None]
    assert np.isnan(r.place_km).all()
    assert resolve_countries([], []).country.tolist() == []
    with pytest.raises(ValueError, match="latitude must be in"):
        resolve_countries([91.0], [0.0])
    # float32 asin(1) in degrees (how PLONK's predictions reach the pole) is rounding, not an error
    pole = float(np.degrees(np.float64(np.arcsin(np.float32(1.0)))))
    assert pole > 90.0
    assert reverse_geocode([pole, -pole], [0.0, 0.0]) == [None, "AQ"]
    with pytest.raises(ValueError, match="latitude must be in"):
        resolve_countries([0.0], [np.inf])
    with pytest.raises(ValueError, match="2 latitudes but 1 longitudes"):
        resolve_countries([0.0, 1.0], [0.0])


def test_batched_equals_one_by_one_and_accepts_pandas():
    points = [p for p, _ in LAND_NEAR_COAST.values()] + list(OPEN_SEA.values()) + [p for p, _ in REMOTE_LAND.values()]
    lat = pd.Series([p[0] for p in points] * 50, dtype="float64")
    lon = pd.Series([p[1] for p in points] * 50, dtype="float64")
    batched = reverse_geocode(lat, lon)
    single = [reverse_geocode([a], [b])[0] for a, b in points]
    assert batched == single * 50
    assert at_sea(lat, lon).tolist() == [c is None for c in single] * 50


def test_names_include_kosovo_and_namibia():
    assert country_name("XK") == "Kosovo"
    assert country_name(" na ") == "Namibia"
    assert country_name("ZZ") is None and country_name(None) is None
    assert SOURCE_AT_SEA in COUNTRY_SOURCES and SOURCE_GEOCODED in COUNTRY_SOURCES


# ------------------------------------------------------------------ a manifest end to end


def test_read_manifest_resolves_missing_countries_and_leaves_the_sea_empty(tmp_path: Path):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    plain = root / "plain.csv"
    plain.write_text(
        "image_id,path,latitude,longitude\n"
        "nice,a/nice.jpg,43.6947,7.2636\n"
        "pier,a/pier.jpg,50.8150,-0.1366\n"
        "southern_ocean,a/so.jpg,-60,0\n"
        "north_pole,a/np.jpg,90,0\n"
        "south_pole,a/sp.jpg,-90,0\n"
        "taveuni_east,a/t1.jpg,-16.8,180\n"
        "taveuni_west,a/t2.jpg,-16.8,-180\n"
        "pristina,a/xk.jpg,42.6629,21.1655\n"
        "windhoek,a/na.jpg,-22.5609,17.0658\n"
        "no_coordinates,a/none.jpg,,\n",
        encoding="utf-8",
    )
    img = read_manifest(plain).images.set_index("image_id")
    expected = {
        "nice": ("FR", "France", "reverse_geocoder"),
        "pier": ("GB", "United Kingdom", "reverse_geocoder"),
        "southern_ocean": (None, None, "at_sea"),
        "north_pole": (None, None, "at_sea"),
        "south_pole": ("AQ", "Antarctica", "reverse_geocoder"),
        "taveuni_east": ("FJ", "Fiji", "reverse_geocoder"),
        "taveuni_west": ("FJ", "Fiji", "reverse_geocoder"),
        "pristina": ("XK", "Kosovo", "reverse_geocoder"),
        "windhoek": ("NA", "Namibia", "reverse_geocoder"),
        "no_coordinates": (None, None, None),
    }
    got = {
        i: tuple(None if pd.isna(v) else v for v in (row.country, row.country_name, row.country_source))
        for i, row in img.iterrows()
    }
    assert got == expected
    # the coordinates are kept as written (180 stays 180 in the table)
    assert img.loc["taveuni_east", "longitude"] == 180.0

    # OSV-5M metadata with an empty country (and unique_country): one row at sea, one on land.
    for image_id in ("101", "102", "103"):
        (root / "images" / f"{image_id}.jpg").write_bytes(b"\xff\xd8fake")
    osv = root / "osv" / "test.csv"
    osv.parent.mkdir()
    osv.write_text(
        "id,latitude,longitude,thumb_original_url,country,sequence,captured_at,region,unique_country,creator_id\n"
        "101,0.0,-30.0,u,,s,1,r,,c\n"
        "102,-24.7275,15.3426,u,,s,1,r,,c\n"
        "103,-33.9036,18.4207,u,ZA,s,1,r,ZA,c\n",
        encoding="utf-8",
    )
    res = read_manifest(osv, image_root=root)
    img = res.images.set_index("image_id")
    assert pd.isna(img.loc["101", "country"]) and pd.isna(img.loc["101", "country_name"])
    assert img.loc["101", "country_source"] == "at_sea"
    assert (img.loc["102", "country"], img.loc["102", "country_source"]) == ("NA", "reverse_geocoder")
    assert (img.loc["103", "country"], img.loc["103", "country_source"]) == ("ZA", "manifest")
    summary = res.summary()
    assert summary["country_sources"] == {"at_sea": 1, "reverse_geocoder": 1, "manifest": 1}
    assert summary["without_country"] == 1
    assert res.rejections.empty

"""Granule search: the local UMM-G catalog returns earthaccess DataGranules; earthdata mode asks earthaccess."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import earthaccess
import pytest

from is2cloud import catalog, settings
from is2cloud.aoi import AOIError
from is2cloud.catalog import NoGranulesError, find_granules, parse_temporal

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"
GRANDMESA = REPO / "data" / "grandmesa.geojson"


@pytest.fixture
def local(monkeypatch, test_archive):
    """Local mode whose default archive is the small `test` preset; earthaccess must not be logged into."""
    s = settings.override(mode="local", scale="test", cache_dir=test_archive.root.parent.parent)
    monkeypatch.setattr(settings, "get_settings", lambda: s)

    def no_login(*a, **k):
        raise AssertionError("earthaccess.login() must not be called in local mode")

    monkeypatch.setattr(earthaccess, "login", no_login)
    monkeypatch.setattr(earthaccess, "search_data", no_login)
    return test_archive


def test_local_search_returns_data_granules(local):
    granules = find_granules(GREENLAND, "ATL06", archive=local)
    names = [g["umm"]["GranuleUR"] for g in granules]
    assert len(granules) == 2 and names == sorted(names)
    keys = {o["key"].rsplit("/", 1)[1]: o for o in local.objects}
    for g in granules:
        assert isinstance(g, earthaccess.DataGranule) and g.cloud_hosted
        o = keys[g["umm"]["GranuleUR"]]
        assert g.data_links(access="direct") == [f"s3://{o['bucket']}/{o['key']}"]
        assert g.data_links()[0].startswith("https://data.nsidc.earthdatacloud.nasa.gov/")
        assert g.size == pytest.approx(o["size"] / 2**20)
        assert g["meta"]["provider-id"] == "NSIDC_CPRD"
    # the default archive is the preset named by settings.scale
    assert [g["umm"]["GranuleUR"] for g in find_granules(GREENLAND, "atl06")] == names
    mesa = find_granules(GRANDMESA, "ATL03", version="6", archive=local)
    assert len(mesa) == 2 and all(g["umm"]["CollectionReference"]["ShortName"] == "ATL03" for g in mesa)
    assert len(find_granules(GRANDMESA, "ATL03", archive=local, count=1)) == 1


def test_local_search_by_time_and_space(local):
    granules = find_granules(GREENLAND, "ATL06", archive=local)
    starts = sorted(g["umm"]["TemporalExtent"]["RangeDateTime"]["BeginningDateTime"] for g in granules)
    first_day = starts[0][:10]
    one = find_granules(GREENLAND, "ATL06", temporal=(first_day, first_day), archive=local)
    assert [g["umm"]["TemporalExtent"]["RangeDateTime"]["BeginningDateTime"] for g in one] == [starts[0]]
    assert len(find_granules(GREENLAND, "ATL06", temporal=f"{first_day},2030-01-01", archive=local)) == 2
    assert len(find_granules(GREENLAND, "ATL06", temporal=(None, datetime(2030, 1, 1)), archive=local)) == 2
    # a small box on the granules' ground track finds them, the same box 1 degree east does not
    pts = granules[0]["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"][0]["Boundary"]
    lon = sum(p["Longitude"] for p in pts["Points"][:-1]) / (len(pts["Points"]) - 1)
    lat = sum(p["Latitude"] for p in pts["Points"][:-1]) / (len(pts["Points"]) - 1)
    assert len(find_granules((lon - 0.05, lat - 0.02, lon + 0.05, lat + 0.02), "ATL06", archive=local)) == 2
    with pytest.raises(NoGranulesError):
        find_granules((lon + 0.95, lat - 0.02, lon + 1.05, lat + 0.02), "ATL06", archive=local)


def test_no_granules_error_names_the_search(local):
    with pytest.raises(NoGranulesError) as err:  # lat/lon swapped: a box in the Southern Ocean
        find_granules((62.63, -45.38, 62.98, -44.62), "ATL06", archive=local)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "ATL06" in msg and "62.6300" in msg and "-45.3800" in msg and "centre lon 62.8050" in msg
    assert "longitude/latitude" in msg and "swap" in msg
    with pytest.raises(NoGranulesError, match="none in the time range") as err:
        find_granules(GREENLAND, "ATL06", temporal=("2030-01-01", "2030-12-31"), archive=local)
    assert "2030-01-01T00:00:00Z" in str(err.value) and "2030-12-31T23:59:59Z" in str(err.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"product": "ATL08"}, "unknown product"),
    ({"product": "ATL06", "version": "007"}, "not in the local synthetic archive"),
    ({"product": "ATL06", "version": "six"}, "not a release number"),
    ({"product": "ATL06", "temporal": ("2020-01-01", "2019-01-01")}, "reversed"),
    ({"product": "ATL06", "temporal": ("yesterday", None)}, "not a date"),
    ({"product": "ATL06", "temporal": ("2019-01-01",)}, "pair"),
    ({"product": "ATL06", "count": 0}, "count"),
])
def test_bad_input_is_named(local, kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_granules(GREENLAND, archive=local, **kwargs)


def test_bad_aoi_is_an_aoi_error(local):
    with pytest.raises(AOIError, match="lon/lat swapped"):
        find_granules((62.6, -145.4, 63.0, -144.6), "ATL06", archive=local)
    with pytest.raises(AOIError):
        find_granules(REPO / "data" / "missing.geojson", "ATL06", archive=local)


def test_parse_temporal():
    start, end = parse_temporal(("2019-03-01", "2019-03-31"))
    assert start == datetime(2019, 3, 1, tzinfo=timezone.utc)
    assert end.date().isoformat() == "2019-03-31" and end.hour == 23
    assert parse_temporal(None) == (None, None)
    assert parse_temporal("2019-03-01T12:00:00Z/2019-03-02")[0].hour == 12


def test_earthdata_mode_asks_earthaccess(monkeypatch, test_archive):
    s = settings.override(mode="earthdata")
    monkeypatch.setattr(settings, "get_settings", lambda: s)
    calls = []
    records = test_archive.umm_records("ATL06")

    def fake_search(**kwargs):
        calls.append(kwargs)
        return [earthaccess.DataGranule(r, cloud_hosted=True) for r in records]

    def no_login(*a, **k):
        raise AssertionError("searching must not log in")

    monkeypatch.setattr(earthaccess, "search_data", fake_search)
    monkeypatch.setattr(earthaccess, "login", no_login)
    granules = find_granules(GREENLAND, "ATL06", "006", temporal=("2019-01-01", "2020-12-31"), count=5)
    assert len(calls) == 1
    kw = calls[0]
    assert kw["short_name"] == "ATL06" and kw["version"] == "006" and kw["cloud_hosted"] is True
    assert kw["temporal"] == ("2019-01-01T00:00:00Z", "2020-12-31T23:59:59Z")
    assert "count" not in kw  # every match, sorted, then cut: the same as local mode
    ring = kw["polygon"]
    assert ring[0] == ring[-1] and len(ring) == 5
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))
    assert area2 > 0  # counter-clockwise, as CMR wants
    assert [g["umm"]["GranuleUR"] for g in granules] == sorted(r["umm"]["GranuleUR"] for r in records)
    # v007 exists in the real cloud: earthdata mode passes it on
    find_granules(GREENLAND, "ATL03", "007")
    assert calls[-1]["version"] == "007" and "temporal" not in calls[-1]
    # nothing found -> NoGranulesError naming CMR
    monkeypatch.setattr(earthaccess, "search_data", lambda **kw: [])
    with pytest.raises(NoGranulesError, match="NASA CMR"):
        find_granules(GREENLAND, "ATL06")


def test_antimeridian_aoi_asks_by_boxes(monkeypatch):
    s = settings.override(mode="earthdata")
    monkeypatch.setattr(settings, "get_settings", lambda: s)
    calls = []
    monkeypatch.setattr(earthaccess, "search_data", lambda **kw: calls.append(kw) or [])
    with pytest.raises(NoGranulesError):
        find_granules((179.5, -70.0, -179.5, -69.0), "ATL06")
    assert len(calls) == 2 and all("bounding_box" in c for c in calls)
    boxes = sorted(c["bounding_box"] for c in calls)
    assert boxes[0][0] == pytest.approx(-180.0) and boxes[1][2] == pytest.approx(180.0)


def test_catalog_module_api():
    assert catalog.PRODUCTS == ("ATL03", "ATL06") and catalog.LOCAL_VERSIONS == ("006",)
    assert issubclass(NoGranulesError, ValueError)

"""is2cloud.maps: footprint maps stay light (near the AOI only, simplified, bounded) and say what they drew."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString

from is2cloud.maps import footprint_map, near_aoi

AOI = (-45.0, 62.6, -44.6, 63.0)


def _footprints() -> gpd.GeoDataFrame:
    lines = [
        LineString([(-44.8, 62.0), (-44.8 + 1e-5, 62.5), (-44.8, 63.5)]),  # crosses the AOI
        LineString([(-44.5, 62.0), (-44.5, 63.5)]),                          # near it
        LineString([(-30.0, 70.0), (-30.0, 71.0)]),                          # far away
    ]
    return gpd.GeoDataFrame({"granule": ["a", "b", "c"], "window": np.array([0, 1, 2], dtype="i4")},
                            geometry=lines, crs="EPSG:4326")


def test_near_aoi_keeps_footprints_within_the_margin():
    assert near_aoi(_footprints(), AOI, 0.5).tolist() == [True, True, False]
    assert near_aoi(_footprints(), AOI, 0.0).tolist() == [True, False, False]


def test_footprint_map_draws_only_near_footprints_in_two_layers():
    fp = _footprints()
    fmap = footprint_map(fp, AOI, highlight=[True, False, False], tooltip=["granule", "window"], around_deg=0.5)
    assert fmap.is2cloud_drawn == (2, 3)
    html = fmap.get_root().render()
    assert "selected (1)" in html and "other (1)" in html and "AOI" in html
    assert "-30.0" not in html  # the far footprint is not drawn


def test_footprint_map_refuses_too_many_and_bad_arguments():
    fp = _footprints()
    with pytest.raises(ValueError, match="max_features"):
        footprint_map(fp, AOI, around_deg=0.5, max_features=1)
    with pytest.raises(ValueError, match="tooltip"):
        footprint_map(fp, AOI, tooltip=["nope"])
    with pytest.raises(ValueError, match="highlight"):
        footprint_map(fp, AOI, highlight=[True])
    with pytest.raises(ValueError, match="longitude/latitude"):
        footprint_map(fp.to_crs(3413), AOI)

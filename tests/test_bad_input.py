"""Bad input through the API (issue 17): wide AOIs, empty results, output modes, settings and messages.
The same cases through the command line are in test_cli_errors.py."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from shapely.geometry import Polygon

from is2cloud.aoi import AOIWarning, load_aoi
from is2cloud.catalog import NoGranulesError, find_granules
from is2cloud.geoparquet import read_geoparquet, validate_geoparquet, write_geoparquet

REPO = Path(__file__).resolve().parents[1]
GREENLAND_POINT = (-45.0, 62.8)

WIDE_BOX = {"type": "Polygon", "coordinates": [[[-60, 59], [130, 59], [130, 84], [-60, 84], [-60, 59]]]}
JUMP_BOX = {"type": "Polygon", "coordinates": [[[179.8, 70.0], [-179.8, 70.0], [-179.8, 70.2], [179.8, 70.2],
                                                [179.8, 70.0]]]}


# -- 1. wide AOIs are never turned into their complement -------------------------------------------------


def test_a_wide_bbox_is_west_to_east():
    aoi = load_aoi((-100, 60, 100, 70))
    assert aoi.bounds == (-100, 60, 100, 70) and not aoi.crosses_antimeridian
    assert aoi.contains(*GREENLAND_POINT) and not aoi.contains(150.0, 65.0)


def test_a_bbox_with_east_below_west_crosses_the_antimeridian():
    aoi = load_aoi((100, 60, -100, 70))
    assert aoi.crosses_antimeridian and aoi.bounds == (100, 60, -100, 70)
    assert aoi.contains(150.0, 65.0) and not aoi.contains(*GREENLAND_POINT)


def test_the_whole_globe():
    for source in ((-180, -90, 180, 90),
                   {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing ambiguous: read as the globe, without a warning
            aoi = load_aoi(source)
        assert aoi.bounds == (-180, -90, 180, 90)
        assert aoi.contains([-179.9, 0.0, 179.9], [-89.0, 0.0, 89.0]).all()


def test_a_polygon_edge_longer_than_180_degrees_is_read_as_written_with_a_warning():
    with pytest.warns(AOIWarning, match=r"190\.0 degrees.*antimeridian=True"):
        aoi = load_aoi(WIDE_BOX)
    assert aoi.bounds == (-60, 59, 130, 84)
    assert aoi.contains(*GREENLAND_POINT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_aoi(WIDE_BOX, antimeridian=False).contains(*GREENLAND_POINT)


def test_a_jump_is_a_crossing_only_when_asked():
    crossing = load_aoi(JUMP_BOX, antimeridian=True)
    assert crossing.crosses_antimeridian and crossing.contains(180.0, 70.1) and not crossing.contains(0.0, 70.1)
    with pytest.warns(AOIWarning):
        literal = load_aoi(JUMP_BOX)
    assert literal.contains(0.0, 70.1) and not literal.contains(179.9, 70.1)


def test_a_wide_geojson_box_over_greenland_finds_its_granules(test_archive):
    with pytest.warns(AOIWarning):
        found = find_granules(WIDE_BOX, "ATL06", archive=test_archive)
    assert len(found) == len(find_granules(REPO / "data" / "greenland_aoi.geojson", "ATL06", archive=test_archive))


def test_the_centre_of_an_antimeridian_aoi(test_archive):
    aoi = load_aoi((179.8, 70.0, -179.8, 70.2))
    assert aoi.centre == pytest.approx((180.0, 70.1))
    with pytest.raises(NoGranulesError) as err:
        find_granules(aoi, "ATL06", archive=test_archive)
    assert "centre lon 180.0000, lat 70.1000" in str(err.value) and "-0.0000" not in str(err.value)
    assert load_aoi(Polygon([(-1, -1), (1, -1), (1, 1), (-1, 1)])).centre == (0.0, 0.0)


# -- 3. an empty result is a valid, empty GeoParquet file ----------------------------------------------------


@pytest.mark.parametrize("module", ["is2cloud.methods.schema", "is2cloud.atl06sr"])
def test_write_an_empty_frame(tmp_path, module):
    import importlib

    empty = importlib.import_module(module).empty_frame()
    path = write_geoparquet(empty, tmp_path / "empty.parquet")
    info = validate_geoparquet(path)
    assert info.num_rows == 0
    back = read_geoparquet(path)
    assert len(back) == 0 and list(back.columns) == list(empty.columns)


# -- 6. outputs get the mode of a new file under the umask --------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path, mask):
    from is2cloud.methods.schema import empty_frame

    old = os.umask(mask)
    try:
        path = write_geoparquet(empty_frame(), tmp_path / "rows.parquet")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


# -- 9. messages that say what to fix ------------------------------------------------------------------------


# (settings values, LocalCloud arguments and corrupted indexes: tests/test_bad_input_table.py, one case per
# row of the README's table)

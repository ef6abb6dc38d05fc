"""The canonical ATL06 subset schema and the cross-method identity helper."""

from __future__ import annotations

from decimal import Decimal

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from is2cloud.methods import (
    CANONICAL_COLUMNS,
    SchemaError,
    assert_same_rows,
    atlas_time,
    canonical_frame,
    check_canonical,
    diff_rows,
    empty_frame,
    sort_canonical,
)

EPOCH = 1198800018.0  # /ancillary_data/atlas_sdp_gps_epoch of every ATL0x product


def columns(n: int = 6, granule: str = "ATL06_20190312000000_11440211_006_01.h5", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "time": atlas_time(4.0e7 + np.arange(n) * 0.00285, EPOCH),
        "latitude": rng.uniform(60, 80, n),
        "longitude": rng.uniform(-50, -30, n),
        "h_li": rng.normal(1500, 5, n).astype("f4"),
        "h_li_sigma": rng.uniform(0, 1, n).astype("f4"),
        "atl06_quality_summary": rng.integers(0, 2, n).astype("i1"),
        "track_id": rng.choice(["gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r"], n),
        "rgt": np.int16(1144),
        "cycle": np.int8(2),
        "segment_id": rng.permutation(np.arange(600000, 600000 + n)).astype("i4"),
        "granule": granule,
    }


EXPECTED_DTYPES = {
    "time": "datetime64[ns, UTC]", "latitude": "float64", "longitude": "float64", "h_li": "float32",
    "h_li_sigma": "float32", "atl06_quality_summary": "int8", "track_id": "str", "rgt": "int16", "cycle": "int8",
    "segment_id": "int32", "granule": "str", "geometry": "geometry",
}


def test_columns_dtypes_and_crs_are_exact():
    gdf = canonical_frame(columns())
    assert list(gdf.columns) == list(CANONICAL_COLUMNS) == list(EXPECTED_DTYPES)
    assert {c: str(t) for c, t in gdf.dtypes.items()} == EXPECTED_DTYPES
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry.name == "geometry"
    assert (gdf.geometry.x == gdf["longitude"]).all() and (gdf.geometry.y == gdf["latitude"]).all()
    check_canonical(gdf)


def test_empty_frame_has_the_schema():
    e = empty_frame()
    assert len(e) == 0 and {c: str(t) for c, t in e.dtypes.items()} == EXPECTED_DTYPES
    check_canonical(e)


def test_sort_is_granule_track_segment_with_fresh_index():
    a = columns(8, granule="ATL06_B.h5", seed=1)
    b = columns(8, granule="ATL06_A.h5", seed=2)
    both = {k: np.concatenate([np.broadcast_to(a[k], 8), np.broadcast_to(b[k], 8)]) for k in a}
    both["time"] = np.concatenate([a["time"].to_numpy(), b["time"].to_numpy()])
    gdf = canonical_frame(both)
    keys = list(zip(gdf["granule"], gdf["track_id"], gdf["segment_id"]))
    assert keys == sorted(keys)
    assert gdf["granule"].iloc[0] == "ATL06_A.h5"
    assert list(gdf.index) == list(range(16))
    shuffled = gdf.sample(frac=1, random_state=3)
    with pytest.raises(SchemaError, match="not sorted|RangeIndex"):
        check_canonical(shuffled)
    pd.testing.assert_frame_equal(sort_canonical(shuffled), gdf)


def test_scalars_are_broadcast_and_fill_values_become_nan():
    c = columns(3)
    c["h_li"] = np.array([1.0, np.finfo("f4").max, 2.0], dtype="f4")
    c["h_li_sigma"] = np.array([np.finfo("f4").max, 0.5, 0.25], dtype="f4")
    gdf = canonical_frame(c, sort=False)
    assert (gdf["rgt"] == 1144).all() and (gdf["granule"] == c["granule"]).all()
    assert np.isnan(gdf["h_li"].iloc[1]) and np.isnan(gdf["h_li_sigma"].iloc[0])
    assert gdf["h_li"].iloc[2] == np.float32(2.0)


def test_atlas_time_is_exact_in_nanoseconds():
    assert atlas_time([0.0], EPOCH)[0] == pd.Timestamp("2018-01-01T00:00:00", tz="UTC")
    dt = np.array([24710205.39202261, 40000000.123456789, 1.000000001])
    got = atlas_time(dt, EPOCH).asi8
    base = (315964800 + int(EPOCH) - 18) * 10**9
    expect = [base + int((Decimal(float(v)) * 10**9).to_integral_value()) for v in dt]
    assert list(got) == expect
    assert str(atlas_time(dt, EPOCH).dtype) == "datetime64[ns, UTC]"
    with pytest.raises(SchemaError, match="non-finite"):
        atlas_time([np.nan], EPOCH)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("h_li"), "missing: \\['h_li'\\]"),
        (lambda c: c.update(extra=1), "not in the schema: \\['extra'\\]"),
        (lambda c: c.update(track_id="gt4l"), "track_id must be one of"),
        (lambda c: c.update(segment_id=np.full(6, 2**31, dtype="i8")), "outside int32"),
        (lambda c: c.update(rgt=1144.5), "whole numbers"),
        (lambda c: c.update(cycle=300), "outside int8"),
        (lambda c: c.update(latitude=np.full(6, 95.0)), "outside lon"),
        (lambda c: c.update(longitude=np.full(6, np.nan)), "non-finite"),
        (lambda c: c.update(granule=[None] * 6), "missing values"),
        (lambda c: c.update(h_li=np.zeros(5)), "has 5 values, expected 6"),
    ],
)
def test_canonical_frame_refuses_bad_columns(change, message):
    c = columns()
    change(c)
    with pytest.raises(SchemaError, match=message):
        canonical_frame(c)


def test_check_canonical_lists_the_problems():
    gdf = canonical_frame(columns())
    with pytest.raises(SchemaError, match="h_li has dtype float64"):
        check_canonical(gdf.astype({"h_li": "f8"}))
    with pytest.raises(SchemaError, match="columns are"):
        check_canonical(gdf[list(reversed(gdf.columns))])
    with pytest.raises(SchemaError, match="CRS"):
        check_canonical(gdf.set_crs("EPSG:3413", allow_override=True))
    moved = gdf.copy()
    moved["geometry"] = gpd.points_from_xy(gdf["longitude"] + 1, gdf["latitude"], crs="EPSG:4326")
    with pytest.raises(SchemaError, match="geometry does not equal"):
        check_canonical(moved)
    with pytest.raises(SchemaError, match="repeat"):
        check_canonical(sort_canonical(pd.concat([gdf, gdf])))
    with pytest.raises(SchemaError, match="not a GeoDataFrame"):
        check_canonical(pd.DataFrame(gdf))


# -- identity --------------------------------------------------------------------------------------


def test_same_rows_in_any_order_are_identical():
    a = canonical_frame(columns(20))
    b = a.sample(frac=1, random_state=0)
    assert_same_rows(a, b)
    assert diff_rows(a, b).identical


def test_nan_equals_nan_but_values_must_match_bit_for_bit():
    c = columns(5)
    c["h_li"][2] = np.nan
    a = canonical_frame(c)
    assert_same_rows(a, a.copy())
    b = a.copy()
    b.loc[3, "h_li"] = np.nextafter(b.loc[3, "h_li"], np.float32(np.inf))
    with pytest.raises(AssertionError, match="column 'h_li' differs in 1 rows"):
        assert_same_rows(a, b)


def test_missing_and_extra_rows_are_named():
    a = canonical_frame(columns(10))
    b = a.drop(index=[2, 5]).reset_index(drop=True)
    with pytest.raises(AssertionError) as err:
        assert_same_rows(a, b, names=("baseline", "kerchunk"))
    text = str(err.value)
    assert "baseline (10 rows) and kerchunk (8 rows) differ" in text
    assert "2 rows only in baseline" in text
    for i in (2, 5):
        assert str(a.loc[i, "segment_id"]) in text


def test_dtype_column_and_geometry_differences_are_reported():
    a = canonical_frame(columns(4))
    with pytest.raises(AssertionError, match="rgt: a has dtype int16, b has int32"):
        assert_same_rows(a, a.astype({"rgt": "int32"}))
    with pytest.raises(AssertionError, match="columns differ"):
        assert_same_rows(a, a.drop(columns="h_li_sigma"))
    b = a.copy()
    b.loc[1, "geometry"] = shapely.Point(0, 0)
    with pytest.raises(AssertionError, match="column 'geometry' differs in 1 rows"):
        assert_same_rows(a, b)
    t = a.copy()
    t.loc[0, "time"] = t.loc[0, "time"] + pd.Timedelta(1, "ns")
    with pytest.raises(AssertionError, match="column 'time' differs in 1 rows"):
        assert_same_rows(a, t)


def test_sort_keeps_a_frame_already_in_order_and_orders_ties_by_every_key():
    from is2cloud.methods.schema import _in_canonical_order

    a = columns(8, granule="ATL06_A.h5", seed=1)
    gdf = canonical_frame(a)
    assert _in_canonical_order(gdf)
    kept = sort_canonical(gdf)
    pd.testing.assert_frame_equal(kept, gdf)
    # one granule and beam, segment ids going down: out of order on the last key only
    beam = canonical_frame({**a, "track_id": "gt1l"})
    backwards = beam.iloc[::-1]
    assert _in_canonical_order(beam) and not _in_canonical_order(backwards)
    pd.testing.assert_frame_equal(sort_canonical(backwards), beam)
    # a later granule's segment id may be smaller: still in order
    b = canonical_frame(columns(8, granule="ATL06_B.h5", seed=2))
    both = pd.concat([gdf, b], ignore_index=True)
    assert _in_canonical_order(both)
    assert not _in_canonical_order(pd.concat([b, gdf], ignore_index=True))
    # keys held as Python objects compare the same way; a missing key value leaves the order to sort_values
    plain = pd.DataFrame({"granule": ["a", "a", "b"], "track_id": ["gt1l", "gt2l", "gt1l"], "segment_id": [5, 1, 0]},
                         dtype=object)
    assert _in_canonical_order(plain) and not _in_canonical_order(plain.iloc[::-1])
    assert not _in_canonical_order(plain.assign(granule=["a", None, "b"]))

"""GeoParquet 1.1 writing, atomic writes (local and S3 on moto), reading and validation."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from is2cloud import geoparquet as gp
from is2cloud.credentials import Credentials, CredentialsError

KEY, SECRET, TOKEN = "AKIDTESTTESTTEST", "s3cr3t-value-never-shown", "t0ken-value-never-shown"
BUCKET = "is2cloud-test-output"


# -- fixtures --------------------------------------------------------------------------------------


def points(n: int = 1000, seed: int = 0, crs: str = "EPSG:4326", west: float = -50, east: float = -30) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(west, east, n)
    lat = rng.uniform(60, 80, n)
    time = pd.DatetimeIndex(pd.Timestamp("2019-03-12", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
                            name="time").as_unit("ns")
    return gpd.GeoDataFrame({"h_li": rng.normal(1500, 10, n).astype("f4"), "track_id": rng.choice(["gt1l", "gt2r"], n)},
                            geometry=gpd.points_from_xy(lon, lat), crs=crs, index=time)


def table_bytes(table: pa.Table, **kw) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kw)
    return sink.getvalue().to_pybytes()


def with_geo(table: pa.Table, edit) -> pa.Table:
    kv = dict(table.schema.metadata)
    geo = json.loads(kv[b"geo"])
    edit(geo)
    kv[b"geo"] = json.dumps(geo).encode()
    return table.replace_schema_metadata(kv)


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET, aws_session_token=TOKEN)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    yield endpoint
    server.stop()


@pytest.fixture()
def s3(moto_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-west-2", aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, aws_session_token=TOKEN)


@pytest.fixture()
def so(moto_endpoint) -> dict:
    return {"key": KEY, "secret": SECRET, "token": TOKEN, "endpoint_url": moto_endpoint,
            "client_kwargs": {"region_name": "us-west-2"}}


def keys_in(s3, prefix: str = "") -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


# -- writing ---------------------------------------------------------------------------------------


def test_written_file_is_geoparquet_1_1_with_bbox_covering(tmp_path):
    gdf = points(500)
    path = gp.write_geoparquet(gdf, tmp_path / "out.parquet", metadata={"recordinfo": {"time": "time"}, "note": "x"})
    schema = pq.read_schema(path)
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Point"]
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    from pyproj import CRS

    assert CRS.from_json_dict(col["crs"]).to_epsg() == 4326
    x, y = gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()
    assert col["bbox"] == [x.min(), y.min(), x.max(), y.max()]
    assert schema.field("bbox").type == pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    bbox = pq.read_table(path, columns=["bbox"]).column("bbox").combine_chunks()
    np.testing.assert_array_equal(bbox.field("xmin").to_numpy(), x)
    np.testing.assert_array_equal(bbox.field("ymax").to_numpy(), y)
    assert json.loads(schema.metadata[b"recordinfo"]) == {"time": "time"}
    assert schema.metadata[b"note"] == b"x"


def test_round_trip_keeps_rows_index_dtypes_crs_and_metadata(tmp_path):
    gdf = points(300)
    path = gp.write_geoparquet(gdf, tmp_path / "out.parquet", metadata={"sliderule": {"server": {"version": "v5"}}})
    back = gp.read_geoparquet(path)
    assert back.index.name == "time" and str(back.index.dtype) == "datetime64[ns, UTC]"
    assert list(back.columns) == list(gdf.columns)  # the covering column is dropped by default
    pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(gdf.drop(columns="geometry")))
    assert shapely.equals_identical(back.geometry.values, gdf.geometry.values).all()
    assert back.crs.equals(gdf.crs)
    assert back.attrs["sliderule"] == {"server": {"version": "v5"}}
    assert "bbox" in gp.read_geoparquet(path, keep_covering=True).columns


def test_geopandas_reads_our_files_and_we_validate_geopandas_files(tmp_path):
    gdf = points(200)
    ours = gp.write_geoparquet(gdf, tmp_path / "ours.parquet")
    theirs = gpd.read_parquet(ours)
    assert shapely.equals_identical(theirs.geometry.values, gdf.geometry.values).all()
    gdf.to_parquet(tmp_path / "gpd.parquet", schema_version="1.1.0", write_covering_bbox=True)
    info = gp.validate_geoparquet(tmp_path / "gpd.parquet", require_covering=True, expected_crs="OGC:CRS84")
    assert info.primary.covering == "bbox" and info.num_rows == 200


def test_row_groups_are_bounded_and_carry_bbox_statistics(tmp_path):
    gdf = points(2500)
    path = gp.write_geoparquet(gdf, tmp_path / "rg.parquet", row_group_size=1000)
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == 3
    paths = {md.row_group(0).column(j).path_in_schema: md.row_group(0).column(j) for j in range(md.row_group(0).num_columns)}
    stats = paths["bbox.xmin"].statistics
    assert stats.has_min_max and stats.min == gdf.geometry.x.iloc[:1000].min()


def test_a_frame_written_a_slice_at_a_time_is_the_file_written_whole(tmp_path, monkeypatch):
    """Large frames go to Arrow a slice at a time; the file has the same rows, row groups and metadata as
    one written from a single table (whole-frame bbox and index), also when a column has no value at all
    in the first slice (pandas types it null there)."""
    gdf = points(1000, west=-60)
    gdf.loc[gdf.index[600:], "h_li"] = np.float32(7)
    gdf["note"] = [None] * 300 + ["late"] * 700
    gp.write_geoparquet(gdf, tmp_path / "whole.parquet", row_group_size=100)
    monkeypatch.setattr(gp, "WRITE_SLICE_ROWS", 250)  # 2 row groups per slice: 5 slices
    gp.write_geoparquet(gdf, tmp_path / "sliced.parquet", row_group_size=100)
    whole, sliced = pq.ParquetFile(tmp_path / "whole.parquet"), pq.ParquetFile(tmp_path / "sliced.parquet")
    assert sliced.metadata.num_row_groups == whole.metadata.num_row_groups == 10
    assert sliced.schema_arrow.equals(whole.schema_arrow, check_metadata=True)
    assert json.loads(sliced.schema_arrow.metadata[b"geo"])["columns"]["geometry"]["bbox"][0] < -59
    back = gp.read_geoparquet(tmp_path / "sliced.parquet")
    pd.testing.assert_frame_equal(pd.DataFrame(back), pd.DataFrame(gp.read_geoparquet(tmp_path / "whole.parquet")))
    pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(gdf.drop(columns="geometry")))
    assert back.geometry.geom_equals(gdf.geometry).all()


def test_float_columns_are_written_byte_stream_split_and_read_back_exactly(tmp_path):
    """Coordinates, heights and the covering's boxes: BYTE_STREAM_SPLIT; the rest keeps its encodings."""
    gdf = points(2000, west=-60)
    gdf["latitude"], gdf["longitude"] = gdf.geometry.y, gdf.geometry.x
    path = gp.write_geoparquet(gdf, tmp_path / "f.parquet", row_group_size=500)
    meta = pq.ParquetFile(path).metadata
    encodings = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
                 for i in range(meta.num_columns)}
    floats = {"latitude", "longitude", "h_li", "bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax"}
    assert floats <= set(encodings)
    assert all("BYTE_STREAM_SPLIT" in encodings[c] for c in floats)
    assert not any("BYTE_STREAM_SPLIT" in e for c, e in encodings.items() if c not in floats)
    back = gp.read_geoparquet(path)
    pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(gdf.drop(columns="geometry")))
    assert back.geometry.geom_equals(gdf.geometry).all()


def test_bbox_read_filters_rows_and_skips_row_groups(tmp_path, monkeypatch):
    gdf = points(3000, west=-60, east=-20)
    gdf = gdf.iloc[np.argsort(gdf.geometry.x.to_numpy())]  # spatially ordered, so row groups have tight boxes
    path = gp.write_geoparquet(gdf, tmp_path / "f.parquet", row_group_size=500)
    box = (-41.0, 65.0, -39.0, 75.0)
    got = gp.read_geoparquet(path, bbox=box)
    x, y = gdf.geometry.x, gdf.geometry.y
    expect = gdf[(x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])]
    assert len(got) > 0 and sorted(got.index) == sorted(expect.index)
    read_groups: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, **kw: read_groups.append(list(groups)) or original(self, groups, **kw))
    gp.read_geoparquet(path, bbox=box)
    assert 0 < len(read_groups[0]) < 6


def test_bbox_read_across_the_antimeridian(tmp_path):
    gdf = points(1000, west=-180, east=180)
    path = gp.write_geoparquet(gdf, tmp_path / "am.parquet")
    got = gp.read_geoparquet(path, bbox=(170.0, 60.0, -170.0, 80.0))
    x = gdf.geometry.x
    expect = gdf[(x >= 170) | (x <= -170)]
    assert len(expect) > 0 and sorted(got.index) == sorted(expect.index)


def test_columns_selection_keeps_geometry_and_index(tmp_path):
    path = gp.write_geoparquet(points(50), tmp_path / "c.parquet")
    got = gp.read_geoparquet(path, columns=["h_li"])
    assert list(got.columns) == ["h_li", "geometry"] and got.index.name == "time"
    with pytest.raises(KeyError, match="nope"):
        gp.read_geoparquet(path, columns=["nope"])


def test_reserved_metadata_keys_and_non_geodataframes_are_refused(tmp_path):
    with pytest.raises(gp.GeoParquetError, match="reserved"):
        gp.write_geoparquet(points(5), tmp_path / "x.parquet", metadata={"geo": "{}"})
    with pytest.raises(gp.GeoParquetError, match="GeoDataFrame"):
        gp.write_geoparquet(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


# -- atomic local writes ---------------------------------------------------------------------------


def test_failed_local_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous result")

    real = gp.pq.ParquetWriter.write_table

    def broken(self, table, **kw):  # the disk fills after the first slice
        real(self, table, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gp.pq.ParquetWriter, "write_table", broken)
    with pytest.raises(gp.OutputPathError, match="out.parquet"):
        gp.write_geoparquet(points(10), target)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_local_write_that_fails_validation_leaves_nothing(tmp_path, monkeypatch):
    def invalid(*a, **kw):
        raise gp.GeoParquetError("simulated invalid output")

    monkeypatch.setattr(gp, "validate_geoparquet", invalid)
    with pytest.raises(gp.GeoParquetError, match="simulated"):
        gp.write_geoparquet(points(10), tmp_path / "new.parquet")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_path_is_named(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    bad = blocker / "sub" / "out.parquet"
    with pytest.raises(gp.OutputPathError, match=str(bad)):
        gp.write_geoparquet(points(5), bad)
    with pytest.raises(gp.OutputPathError, match="directory"):
        gp.write_geoparquet(points(5), tmp_path)
    with pytest.raises(gp.OutputPathError, match="unsupported scheme"):
        gp.write_geoparquet(points(5), "gs://bucket/out.parquet")


def test_missing_parent_directories_are_created(tmp_path):
    path = gp.write_geoparquet(points(5), tmp_path / "a" / "b" / "out.parquet")
    assert Path(path).exists()


# -- validation ------------------------------------------------------------------------------------


def test_validate_accepts_table_bytes_file_object_and_path(tmp_path):
    gdf = points(100)
    table = gp.to_arrow(gdf)
    data = table_bytes(table)
    path = tmp_path / "v.parquet"
    path.write_bytes(data)
    for source in (table, data, path, str(path), open(path, "rb"), pq.ParquetFile(path)):
        info = gp.validate_geoparquet(source, require_covering=True, expected_crs="EPSG:4326")
        assert info.num_rows == 100 and info.primary.geometry_types == ("Point",)


BREAKAGES = {
    "no geo metadata": (lambda t: t.replace_schema_metadata({}), "no 'geo' key"),
    "bad version": (lambda t: with_geo(t, lambda g: g.update(version="2.0")), "version"),
    "unknown primary": (lambda t: with_geo(t, lambda g: g.update(primary_column="geom")), "primary_column"),
    "not WKB": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(encoding="WKT")), "encoding"),
    "unknown geometry type": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(geometry_types=["Pointy"])),
                              "unknown geometry types"),
    "types do not match": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(geometry_types=["Polygon"])),
                           "holds \\['Point'\\]"),
    "crs not projjson": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(crs="EPSG:4326")), "PROJJSON"),
    "crs garbage": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(crs={"type": "nonsense"})),
                    "not valid PROJJSON"),
    "bbox too small": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(bbox=[-41, 61, -40, 62])),
                       "beyond the declared bbox"),
    "bbox malformed": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(bbox=[1, 2, 3])), "4 or 6"),
    "covering column missing": (lambda t: t.drop_columns(["bbox"]), "covering column 'bbox' is not in the table"),
    "covering field missing": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"]["covering"]["bbox"].update(
        xmin=["bbox", "west"])), "no field 'west'"),
    "edges": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(edges="curved")), "edges"),
    "orientation": (lambda t: with_geo(t, lambda g: g["columns"]["geometry"].update(orientation="clockwise")),
                    "orientation"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_validate_rejects_broken_metadata(case):
    table = gp.to_arrow(points(100))
    gp.validate_geoparquet(table)  # the unbroken table is valid
    breaker, message = BREAKAGES[case]
    with pytest.raises(gp.GeoParquetError, match=message):
        gp.validate_geoparquet(breaker(table))


def test_validate_rejects_a_covering_column_that_does_not_match_the_geometries():
    table = gp.to_arrow(points(100))
    i = table.schema.get_field_index("bbox")
    b = table.column("bbox").combine_chunks()
    xmin = b.field("xmin").to_numpy().copy()
    xmin[7] += 0.5
    tampered = pa.StructArray.from_arrays([pa.array(xmin), b.field("ymin"), b.field("xmax"), b.field("ymax")],
                                          names=["xmin", "ymin", "xmax", "ymax"])
    with pytest.raises(gp.GeoParquetError, match="does not match the geometry bounds in 1 rows \\(first at row 7\\)"):
        gp.validate_geoparquet(table.set_column(i, "bbox", tampered))


def test_validate_accepts_an_enclosing_float32_covering():
    table = gp.to_arrow(points(100))
    i = table.schema.get_field_index("bbox")
    b = table.column("bbox").combine_chunks()

    def f32(arr, direction):  # round outwards, as a float32 writer must
        v = arr.to_numpy()
        r = v.astype("f4")
        return np.where(r.astype("f8") > v if direction < 0 else r.astype("f8") < v,
                        np.nextafter(r, np.float32(direction * np.inf)), r)

    cov = pa.StructArray.from_arrays([pa.array(f32(b.field("xmin"), -1)), pa.array(f32(b.field("ymin"), -1)),
                                      pa.array(f32(b.field("xmax"), 1)), pa.array(f32(b.field("ymax"), 1))],
                                     names=["xmin", "ymin", "xmax", "ymax"])
    gp.validate_geoparquet(table.set_column(i, "bbox", cov))
    shrunk = pa.StructArray.from_arrays([pa.array(f32(b.field("xmin"), 1)), pa.array(f32(b.field("ymin"), 1)),
                                         pa.array(f32(b.field("xmax"), -1)), pa.array(f32(b.field("ymax"), -1))],
                                        names=["xmin", "ymin", "xmax", "ymax"])
    with pytest.raises(gp.GeoParquetError, match="does not match"):
        gp.validate_geoparquet(table.set_column(i, "bbox", shrunk))


def test_validate_checks_the_expected_crs_and_absent_crs_means_crs84():
    polar = points(20).to_crs("EPSG:3413")
    table = gp.to_arrow(polar)
    with pytest.raises(gp.GeoParquetError, match="expected EPSG:4326"):
        gp.validate_geoparquet(table, expected_crs="EPSG:4326")
    assert gp.validate_geoparquet(table, expected_crs="EPSG:3413").primary.crs.to_epsg() == 3413
    no_crs = with_geo(gp.to_arrow(points(20)), lambda g: g["columns"]["geometry"].pop("crs"))
    assert gp.validate_geoparquet(no_crs, expected_crs="OGC:CRS84").primary.crs.to_string() == "OGC:CRS84"


def test_validate_flags_swapped_lon_lat():
    rng = np.random.default_rng(1)
    swapped = gpd.GeoDataFrame(geometry=gpd.points_from_xy(rng.uniform(60, 80, 10), rng.uniform(-50, 130, 10)),
                               crs="EPSG:4326")
    with pytest.raises(gp.GeoParquetError, match="swapped|outside the range"):
        gp.validate_geoparquet(gp.to_arrow(swapped))


def test_validate_flags_undecodable_wkb():
    table = gp.to_arrow(points(10))
    i = table.schema.get_field_index("geometry")
    wkb = table.column("geometry").to_pylist()
    wkb[3] = b"\x01\x02not wkb"
    with pytest.raises(gp.GeoParquetError, match="not valid WKB"):
        gp.validate_geoparquet(table.set_column(i, "geometry", pa.array(wkb, pa.binary())))


def test_read_refuses_an_invalid_file_unless_told_not_to_validate(tmp_path):
    table = with_geo(gp.to_arrow(points(20)), lambda g: g["columns"]["geometry"].update(geometry_types=["LineString"]))
    path = tmp_path / "bad.parquet"
    path.write_bytes(table_bytes(table))
    with pytest.raises(gp.GeoParquetError, match=str(path)):
        gp.read_geoparquet(path)
    assert len(gp.read_geoparquet(path, validate=False)) == 20


def test_empty_and_null_geometries():
    gdf = gpd.GeoDataFrame({"v": [1, 2, 3]}, geometry=[shapely.Point(1, 2), None, shapely.Point()], crs="EPSG:4326")
    table = gp.to_arrow(gdf)
    info = gp.validate_geoparquet(table)
    assert info.primary.bbox == (1.0, 2.0, 1.0, 2.0)
    back = gp.read_geoparquet(table)
    assert back.geometry.iloc[1] is None and back.geometry.iloc[2].is_empty


@pytest.mark.parametrize("geoms", [
    pytest.param(None, id="2d points (direct encoding)"),
    pytest.param([shapely.Point(1, 2), shapely.Point(3, 4, 5)], id="a 3d point"),
    pytest.param([shapely.Point(1, 2), shapely.LineString([(0, 0), (1, 1)])], id="mixed types"),
])
def test_wkb_and_boxes_are_shapelys_whichever_encoding_is_used(geoms):
    gdf = points(50) if geoms is None else gpd.GeoDataFrame({"v": range(len(geoms))}, geometry=geoms, crs="EPSG:4326")
    table = gp.to_arrow(gdf)
    values = np.asarray(gdf.geometry.values, dtype=object)
    has_z = bool(shapely.has_z(values).any())
    assert table["geometry"].to_pylist() == list(shapely.to_wkb(values, flavor="iso",
                                                                output_dimension=3 if has_z else 2))
    bbox = table["bbox"].combine_chunks()
    got = np.column_stack([bbox.field(f).to_numpy() for f in ("xmin", "ymin", "xmax", "ymax")])
    np.testing.assert_array_equal(got, shapely.bounds(values))
    info = gp.validate_geoparquet(table)
    assert list(info.primary.geometry_types) == sorted({g.geom_type + (" Z" if g.has_z else "") for g in values})


# -- S3 --------------------------------------------------------------------------------------------


def test_s3_round_trip_with_storage_options(so, s3):
    gdf = points(400)
    url = gp.write_geoparquet(gdf, f"s3://{BUCKET}/results/a.parquet", storage_options=so, metadata={"k": "v"})
    assert url == f"s3://{BUCKET}/results/a.parquet"
    assert keys_in(s3, "results/") == ["results/a.parquet"]
    back = gp.read_geoparquet(url, storage_options=so)
    assert len(back) == 400 and back.attrs["k"] == "v"
    assert gp.read_metadata(url, storage_options=so)["k"] == "v"
    assert gp.validate_geoparquet(url, storage_options=so, require_covering=True).num_rows == 400


def test_s3_with_a_credentials_value(moto_endpoint, s3):
    creds = Credentials(KEY, SECRET, TOKEN, region="us-west-2", endpoint_url=moto_endpoint, source="test")
    url = gp.write_geoparquet(points(30), f"s3://{BUCKET}/creds.parquet", credentials=creds)
    assert len(gp.read_geoparquet(url, credentials=creds)) == 30


def test_s3_multipart_upload(so, s3, monkeypatch):
    monkeypatch.setattr(gp, "SINGLE_PUT_MAX_BYTES", 1)
    monkeypatch.setattr(gp, "PART_BYTES", 5 * 2**20)
    rng = np.random.default_rng(3)
    n = 400_000  # random float64 columns barely compress: well over one 5 MiB part
    gdf = gpd.GeoDataFrame({"noise": rng.random(n)}, geometry=gpd.points_from_xy(rng.uniform(-50, -30, n),
                                                                                 rng.uniform(60, 80, n)), crs="EPSG:4326")
    url = gp.write_geoparquet(gdf, f"s3://{BUCKET}/big.parquet", storage_options=so, compression="none")
    head = s3.head_object(Bucket=BUCKET, Key="big.parquet")
    assert head["ContentLength"] > 5 * 2**20 and "-" in head["ETag"]  # a multipart ETag
    assert len(gp.read_geoparquet(url, storage_options=so)) == n


def test_failed_multipart_upload_is_aborted_and_leaves_no_object(so, s3, monkeypatch):
    monkeypatch.setattr(gp, "SINGLE_PUT_MAX_BYTES", 1)
    monkeypatch.setattr(gp, "PART_BYTES", 5 * 2**20)
    real = gp._s3fs

    class Flaky:
        def __init__(self, fs):
            self.fs, self.parts = fs, 0

        async def _call_s3(self, method, **kw):
            if method == "upload_part":
                self.parts += 1
                if self.parts == 2:
                    raise ConnectionResetError("connection reset by peer")
            return await self.fs._call_s3(method, **kw)

        def __getattr__(self, name):
            return getattr(self.fs, name)

    monkeypatch.setattr(gp, "_s3fs", lambda *a: Flaky(real(*a)))
    rng = np.random.default_rng(4)
    n = 400_000
    gdf = gpd.GeoDataFrame({"noise": rng.random(n)}, geometry=gpd.points_from_xy(rng.uniform(-50, -30, n),
                                                                                 rng.uniform(60, 80, n)), crs="EPSG:4326")
    with pytest.raises(gp.OutputPathError, match=f"s3://{BUCKET}/partial.parquet.*connection reset by peer"):
        gp.write_geoparquet(gdf, f"s3://{BUCKET}/partial.parquet", storage_options=so, compression="none")
    assert "partial.parquet" not in keys_in(s3)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_s3_write_that_fails_validation_sends_nothing(so, s3, monkeypatch):
    def invalid(*a, **kw):
        raise gp.GeoParquetError("simulated invalid output")

    monkeypatch.setattr(gp, "validate_geoparquet", invalid)
    with pytest.raises(gp.GeoParquetError):
        gp.write_geoparquet(points(10), f"s3://{BUCKET}/never.parquet", storage_options=so)
    assert "never.parquet" not in keys_in(s3)


def test_s3_errors_name_the_url_and_never_the_secret(so):
    with pytest.raises(gp.OutputPathError) as err:
        gp.write_geoparquet(points(5), "s3://no-such-bucket-here/x.parquet", storage_options=so)
    assert "s3://no-such-bucket-here/x.parquet" in str(err.value)
    assert SECRET not in str(err.value) and TOKEN not in str(err.value)
    with pytest.raises(gp.OutputPathError, match="not an S3 object URL"):
        gp.write_geoparquet(points(5), f"s3://{BUCKET}/", storage_options=so)


def test_s3_without_credentials_is_a_clear_error(so):
    with pytest.raises(CredentialsError, match=f"missing credentials for s3://{BUCKET}/x.parquet"):
        gp.write_geoparquet(points(5), f"s3://{BUCKET}/x.parquet")
    no_key = {k: v for k, v in so.items() if k not in ("key", "secret")}
    with pytest.raises(CredentialsError, match="no key/secret"):
        gp.read_geoparquet(f"s3://{BUCKET}/x.parquet", storage_options=no_key)


def test_expired_credentials_are_refused(moto_endpoint):
    import datetime as dt

    old = Credentials(KEY, SECRET, TOKEN, expiration=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                      endpoint_url=moto_endpoint, source="test")
    with pytest.raises(CredentialsError, match="expired"):
        gp.write_geoparquet(points(5), f"s3://{BUCKET}/x.parquet", credentials=old)


def test_reading_a_missing_object_names_it(so):
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/absent.parquet"):
        gp.read_geoparquet(f"s3://{BUCKET}/absent.parquet", storage_options=so)
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        gp.read_geoparquet(os.path.join("/nonexistent-dir", "absent.parquet"))


def test_write_refuses_swapped_lon_lat_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(7)
    swapped = gpd.GeoDataFrame(geometry=gpd.points_from_xy(rng.uniform(60, 80, 10), rng.uniform(-50, 130, 10)),
                               crs="EPSG:4326")
    target = tmp_path / "swapped.parquet"
    with pytest.raises(gp.GeoParquetError, match="swapped|outside the range"):
        gp.write_geoparquet(swapped, target)
    assert list(tmp_path.iterdir()) == []

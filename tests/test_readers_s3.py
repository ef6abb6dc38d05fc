"""Every client reads the same bytes, and every HDF5 reader the same values, from a generated granule
served by the embedded cloud."""

from __future__ import annotations

import numpy as np
import obstore
import pytest
import xarray as xr

pytestmark = pytest.mark.slow

LI = "gt1l/land_ice_segments"
HEIGHTS = "gt1r/heights"


def _granule(archive, product: str) -> tuple[str, str, "object"]:
    for o in archive.manifest["objects"]:
        if o["key"].endswith(".h5") and f"/{product}/" in o["key"]:
            return o["bucket"], o["key"], archive.root / "objects" / o["bucket"] / o["key"]
    raise AssertionError(f"no {product} granule in the test archive")


@pytest.fixture(scope="module")
def atl06(test_archive):
    return _granule(test_archive, "ATL06")


@pytest.fixture(scope="module")
def atl03(test_archive):
    return _granule(test_archive, "ATL03")


def test_four_clients_read_the_same_byte_range(creds, atl06):
    bucket, key, local = atl06
    a, b = 4096, 4096 + 250_000 - 1
    want = local.read_bytes()[a:b + 1]
    got_boto3 = creds.boto3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={a}-{b}")["Body"].read()
    with creds.s3fs().open(f"{bucket}/{key}", "rb", cache_type="none") as f:
        f.seek(a)
        got_s3fs = f.read(b - a + 1)
    got_obstore = bytes(obstore.get_range(creds.obstore(bucket), key, start=a, end=b + 1))
    with creds.pyarrow_fs().open_input_file(f"{bucket}/{key}") as f:
        f.seek(a)
        got_pyarrow = f.read(b - a + 1)
    assert got_boto3 == got_s3fs == got_obstore == got_pyarrow == want


def _read_h5py(creds, url, path):
    import h5py

    with creds.s3fs().open(url, "rb", cache_type="blockcache", block_size=4 << 20) as f, h5py.File(f, "r") as h5:
        return h5[path][...]


def _read_xarray(creds, url, group, name):
    with creds.s3fs().open(url, "rb", cache_type="blockcache", block_size=4 << 20) as f:
        ds = xr.open_dataset(f, engine="h5netcdf", group=group, decode_cf=False, phony_dims="access")
        return ds[name].values


def _read_virtualizarr(creds, bucket, url, group, name):
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({f"s3://{bucket}": creds.obstore(bucket)})
    manifest_store = HDFParser(group=group)(url, registry)
    ds = xr.open_dataset(manifest_store, engine="zarr", consolidated=False, zarr_format=3, mask_and_scale=False,
                         decode_times=False)
    return ds[name].values


def _read_kerchunk(creds, url, group, name):
    from kerchunk.hdf import SingleHdf5ToZarr

    so = dict(creds.storage_options())
    with creds.s3fs().open(url, "rb", cache_type="blockcache", block_size=4 << 20) as f:
        refs = SingleHdf5ToZarr(f, url, inline_threshold=300).translate()
    ds = xr.open_dataset("reference://", engine="zarr", group=group, consolidated=False, zarr_format=2,
                         mask_and_scale=False, decode_times=False,
                         storage_options=dict(fo=refs, remote_protocol="s3", remote_options=dict(so, asynchronous=True)))
    return ds[name].values


def _read_h5coro(creds, bucket, key, path, monkeypatch):
    from h5coro import h5coro, s3driver

    for k, v in creds.environ().items():  # h5coro's S3 driver honours AWS_ENDPOINT_URL
        monkeypatch.setenv(k, v)
    h5obj = h5coro.H5Coro(f"{bucket}/{key}", s3driver.S3Driver, credentials=dict(creds.h5coro()), errorChecking=True)
    try:
        promise = h5obj.readDatasets([f"/{path}"], block=True)
        return np.asarray(promise[f"/{path}"])
    finally:
        h5obj.close()


@pytest.mark.parametrize("product,group,name", [
    ("ATL06", LI, "h_li"), ("ATL06", LI, "latitude"), ("ATL06", LI, "delta_time"),
    ("ATL06", LI, "atl06_quality_summary"),
    ("ATL03", HEIGHTS, "h_ph"), ("ATL03", HEIGHTS, "signal_conf_ph"), ("ATL03", HEIGHTS, "lat_ph"),
])
def test_hdf5_readers_agree_over_s3(creds, atl06, atl03, product, group, name, monkeypatch):
    import h5py

    bucket, key, local = atl06 if product == "ATL06" else atl03
    url = f"s3://{bucket}/{key}"
    path = f"{group}/{name}"
    with h5py.File(local, "r") as h5:
        want = h5[path][...]
    results = {
        "h5py+s3fs": _read_h5py(creds, url, path),
        "xarray(h5netcdf)": _read_xarray(creds, url, group, name),
        "virtualizarr(HDFParser)": _read_virtualizarr(creds, bucket, url, group, name),
        "kerchunk": _read_kerchunk(creds, url, group, name),
        "h5coro": _read_h5coro(creds, bucket, key, path, monkeypatch),
    }
    for reader, got in results.items():
        got = np.asarray(got)
        if reader == "h5coro" and got.shape != want.shape:
            got = got.reshape(want.shape)
        assert got.dtype == want.dtype, f"{reader}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=f"{reader} read different values for {path}")

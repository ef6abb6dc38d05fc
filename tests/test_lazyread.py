"""The shared reader of the virtual methods on Zarr copies of granules: the same columns as the
baseline's clip, only the chunks holding AOI rows read, COMPACT and missing variables refused."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from granule_specs import ANTIMERIDIAN_AOIS, antimeridian_atl06

from is2cloud.aoi import load_aoi
from is2cloud.methods import baseline
from is2cloud.methods.chunks import chunk_runs
from is2cloud.methods.identity import assert_same_rows
from is2cloud.methods.lazyread import (
    COMPACT_ATTR,
    SCALARS_ATTR,
    CompactVariableError,
    MissingVariableError,
    read_granule_group,
    read_rows,
)

REPO = Path(__file__).resolve().parents[1]
GREENLAND = REPO / "data" / "greenland_aoi.geojson"


class CountingStore(zarr.storage.WrapperStore):
    """Counts the chunk keys zarr reads."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in key:
            self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def to_zarr(path: Path, chunk: int | None = None) -> zarr.Group:
    """A Zarr copy of an ATL06 granule's beams and scalars (HDF5 chunk shape, or ``chunk`` rows)."""
    root = zarr.open_group(CountingStore(zarr.storage.MemoryStore()), mode="w")
    with h5py.File(path) as f:
        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and ("land_ice_segments/" in name and name.count("/") == 2
                                                  or name in ("orbit_info/rgt", "orbit_info/cycle_number",
                                                              "ancillary_data/atlas_sdp_gps_epoch")):
                rows = chunk or (obj.chunks[0] if obj.chunks else obj.shape[0])
                root.create_array(name, data=obj[()], chunks=(rows,), fill_value=obj.fillvalue)
        f.visititems(copy)
    return root


def local(test_archive, granule) -> Path:
    return test_archive.path_of(granule.data_links(access="direct")[0].split("/", 3)[3])


def clip(path: Path, aoi, variables=baseline.DEFAULT_VARIABLES):
    with h5py.File(path) as f:
        return baseline.clip_granule(f, load_aoi(aoi), variables, granule=path.name)


def test_chunk_runs_as_the_reader_uses_them():
    assert chunk_runs(np.array([], dtype="i8"), 10, 100) == []
    assert chunk_runs(np.array([0, 5, 12, 35, 36, 94]), 10, 95) == [(0, 20), (30, 40), (90, 95)]
    assert chunk_runs(np.array([19, 20]), 10, 25) == [(10, 25)]


@pytest.mark.parametrize("aoi", [GREENLAND, (-48.0, 62.5, -47.0, 63.0)])
def test_same_columns_as_the_baseline_clip(granules, test_archive, aoi):
    path = local(test_archive, granules[0])
    want = clip(path, aoi)
    got = read_granule_group(to_zarr(path), load_aoi(aoi), granule=path.name)
    assert list(got) == list(want)
    assert_same_rows(baseline.assemble([want]), baseline.assemble([got]), names=("h5py clip", "lazy read"))


def test_only_the_chunks_holding_aoi_rows_are_read(granules, test_archive):
    path = local(test_archive, granules[0])
    group = to_zarr(path, chunk=100)
    with h5py.File(path) as f:
        lon, lat = f["gt2l/land_ice_segments/longitude"][()], f["gt2l/land_ice_segments/latitude"][()]
    i = len(lat) // 2
    aoi = (float(lon[i:i + 30].min()) - 0.001, float(min(lat[i], lat[i + 29])), float(lon[i:i + 30].max()) + 0.001,
           float(max(lat[i], lat[i + 29])))
    store = group.store
    store.keys.clear()
    got = read_granule_group(group, load_aoi(aoi), granule=path.name)
    assert 0 < len(got["latitude"]) and set(got["track_id"]) <= {"gt2l", "gt2r"}
    rows = np.flatnonzero(load_aoi(aoi).contains(lon, lat))
    chunks = {int(r) // 100 for r in rows}
    h_li = [k for k in store.keys if k.startswith("gt2l/land_ice_segments/h_li/")]
    assert sorted(int(k.rsplit("/", 1)[1]) for k in h_li) == sorted(chunks)
    n_chunks = -(-len(lat) // 100)
    assert len([k for k in store.keys if k.startswith("gt2l/land_ice_segments/latitude/")]) == n_chunks
    assert_same_rows(baseline.assemble([clip(path, aoi)]), baseline.assemble([got]))


def test_read_rows_across_runs():
    arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(95,), chunks=(10,), dtype="f8")
    arr[:] = np.arange(95.0)
    rows = np.array([0, 5, 12, 35, 36, 94])
    assert read_rows(arr, rows, granule="g").tolist() == rows.astype(float).tolist()


@pytest.mark.parametrize("aoi", ANTIMERIDIAN_AOIS)
def test_antimeridian(tmp_path_factory, aoi):
    path = antimeridian_atl06(tmp_path_factory.mktemp("am"))
    got = read_granule_group(to_zarr(path), load_aoi(aoi), granule=path.name)
    want = clip(path, aoi)
    assert (got["longitude"] > 0).any() and (got["longitude"] < 0).any()
    assert_same_rows(baseline.assemble([want]), baseline.assemble([got]))


def test_materialised_scalars_compact_and_missing_variables(granules, test_archive):
    path = local(test_archive, granules[0])
    group = to_zarr(path)
    want = clip(path, GREENLAND)
    # scalars stored as attributes win over the arrays (the arrays may be COMPACT, i.e. zeros)
    del group["orbit_info/rgt"]
    group.attrs[SCALARS_ATTR] = {"rgt": {"value": int(want["rgt"][0]), "dtype": "<i2"}}
    got = read_granule_group(group, load_aoi(GREENLAND), granule=path.name)
    assert_same_rows(baseline.assemble([want]), baseline.assemble([got]))
    group["gt1l/land_ice_segments"].attrs[COMPACT_ATTR] = ["h_li_sigma"]
    del group["gt1l/land_ice_segments/h_li_sigma"]
    with pytest.raises(CompactVariableError, match=f"{path.name}.*gt1l/land_ice_segments/h_li_sigma.*COMPACT"):
        read_granule_group(group, load_aoi(GREENLAND), granule=path.name)
    with pytest.raises(MissingVariableError, match=f"{path.name}.*gt1l/land_ice_segments/nope is missing"):
        read_granule_group(to_zarr(path), load_aoi(GREENLAND), (*baseline.DEFAULT_VARIABLES, "nope"),
                           granule=path.name)


def test_retry_transient_sync_tries_again_only_what_a_cut_connection_explains():
    from is2cloud.methods.lazyread import READ_RETRIES, retry_transient_sync

    class StorageError(Exception):  # what Icechunk raises for a body cut mid-way
        pass

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= READ_RETRIES:
            raise StorageError("streaming error: end of file before message length reached")
        return "opened"

    assert retry_transient_sync(flaky) == "opened" and len(calls) == READ_RETRIES + 1
    calls.clear()

    def missing():
        calls.append(1)
        raise FileNotFoundError("no such repository")

    with pytest.raises(FileNotFoundError):
        retry_transient_sync(missing)
    assert len(calls) == 1

"""Chunk tables and the physical limit, checked against h5py's chunk index read directly."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from is2cloud.aoi import load_aoi
from is2cloud.methods.chunks import GRANULE_SCALARS, aoi_rows, chunk_table, chunks_for_rows, physical_limit
from is2cloud.methods.schema import ATL06_VARIABLES, TRACK_IDS


@pytest.fixture(scope="module")
def atl06_path(test_archive) -> Path:
    key = next(k for k in test_archive.keys if "/ATL06/" in k)
    return test_archive.path_of(key)


def _chunked_copy(src: Path, dst: Path, rows_per_chunk: int) -> None:
    """A small file whose datasets have several chunks (the test granules fit in one 10k chunk)."""
    with h5py.File(src) as f, h5py.File(dst, "w") as out:
        for beam in TRACK_IDS:
            g = out.create_group(f"{beam}/land_ice_segments")
            for v in ATL06_VARIABLES:
                g.create_dataset(v, data=f[f"{beam}/land_ice_segments/{v}"][()], chunks=(rows_per_chunk,),
                                 compression="gzip")
        for p in GRANULE_SCALARS:
            out.create_dataset(p, data=f[p][()])


def test_chunk_table_matches_the_hdf5_chunk_index(atl06_path, tmp_path):
    path = tmp_path / "chunked.h5"
    _chunked_copy(atl06_path, path, 500)
    with h5py.File(path) as f:
        ds = f["gt2l/land_ice_segments/h_li"]
        t = chunk_table(ds)
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
        assert t.layout == "chunked" and len(t) == len(infos) == -(-ds.shape[0] // 500)
        assert list(t.row_start) == sorted(i.chunk_offset[0] for i in infos)
        assert t.row_stop[-1] == ds.shape[0] and all(t.row_stop[:-1] == t.row_start[1:])
        by_start = {i.chunk_offset[0]: i for i in infos}
        assert list(t.byte_offset) == [by_start[s].byte_offset for s in t.row_start]
        assert list(t.nbytes) == [by_start[s].size for s in t.row_start]
        rgt = chunk_table(f["/orbit_info/rgt"])  # contiguous: one piece, its storage
        assert rgt.layout == "contiguous" and len(rgt) == 1
        assert rgt.total_bytes == f["/orbit_info/rgt"].id.get_storage_size()
        assert rgt.byte_offset[0] == f["/orbit_info/rgt"].id.get_offset()


def test_chunks_for_rows(atl06_path, tmp_path):
    path = tmp_path / "chunked.h5"
    _chunked_copy(atl06_path, path, 500)
    with h5py.File(path) as f:
        t = chunk_table(f["gt1l/land_ice_segments/latitude"])
    n = t.nrows
    assert list(chunks_for_rows(t, np.array([0, 499, 500, n - 1]))) == [0, 1, len(t) - 1]
    mask = np.zeros(n, bool)
    mask[1200:1300] = True
    assert list(chunks_for_rows(t, mask)) == [2]
    assert len(chunks_for_rows(t, np.zeros(n, bool))) == 0


def test_physical_limit_by_hand(atl06_path, tmp_path):
    path = tmp_path / "chunked.h5"
    _chunked_copy(atl06_path, path, 250)
    with h5py.File(path) as f:
        lat = f["gt2r/land_ice_segments/latitude"][()]
        lon = f["gt2r/land_ice_segments/longitude"][()]
        # a box around rows 600..899 of gt2r (chunks 2 and 3 of 250 rows)
        aoi = load_aoi((float(lon[600:900].min()), float(lat[600:900].min()),
                        float(lon[600:900].max()), float(lat[600:900].max())))
        expected_bytes, expected_chunks, expected_rows = 0, 0, 0
        for beam in TRACK_IDS:
            g = f[f"{beam}/land_ice_segments"]
            x, y = g["longitude"][()], g["latitude"][()]
            w, s, e, n = aoi.bounds
            inside = (x >= w) & (x <= e) & (y >= s) & (y <= n)  # a box: the boundary rule by hand
            expected_rows += int(inside.sum())
            wanted = set(np.flatnonzero(inside) // 250)
            for v in ATL06_VARIABLES:
                ds = g[v]
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    if info.chunk_offset[0] // 250 in wanted:
                        expected_bytes += info.size
                        expected_chunks += 1
        scalars = sum(f[p].id.get_storage_size() for p in GRANULE_SCALARS)
        limit = physical_limit(f, aoi, granule="x.h5")
        assert np.array_equal(aoi_rows(f["gt2r/land_ice_segments"], aoi)[600:900], np.ones(300, bool))
    assert limit.rows == expected_rows and limit.rows >= 300
    assert limit.chunks == expected_chunks
    assert limit.scalar_bytes == scalars
    assert limit.nbytes == expected_bytes + scalars
    assert sum(limit.per_variable.values()) == expected_bytes
    assert limit.nbytes < limit.total_chunk_bytes


def test_physical_limit_outside_and_missing(atl06_path):
    with h5py.File(atl06_path) as f:
        nothing = physical_limit(f, (10.0, 10.0, 11.0, 11.0))
        assert (nothing.nbytes, nothing.rows, nothing.chunks, nothing.scalar_bytes) == (0, 0, 0, 0)
        with pytest.raises(KeyError, match="gt1l/land_ice_segments/no_such_variable"):
            physical_limit(f, (10.0, 10.0, 11.0, 11.0), ("latitude", "no_such_variable"))

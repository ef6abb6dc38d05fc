"""Where the rows of one HDF5 dataset are stored, window by window (a window is the row range of one
chunk of the coordinates): chunk byte ranges, codecs and filters, inline bytes; and the points that place
each window on Earth (the coordinates themselves, or for ATL03 the 20 m geolocation segments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from is2cloud.methods.chunkindex.errors import ChunkIndexError
from is2cloud.methods.ranges import Codec

WINDOW_ROWS_CONTIGUOUS = 10_000  # window length when the coordinate dataset is not chunked
ATL03_SEGMENT_MARGIN_M = 50.0  # photons of a 20 m segment lie within this of its reference photon


def _filters(ds: h5py.Dataset, where: str) -> tuple[tuple[Any, ...], ...]:
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        if code == h5py.h5z.FILTER_DEFLATE:
            out.append(("deflate", int(values[0]) if len(values) else 6))
        elif code == h5py.h5z.FILTER_SHUFFLE:
            out.append(("shuffle", int(values[0]) if len(values) else ds.dtype.itemsize))
        elif code == h5py.h5z.FILTER_FLETCHER32:
            out.append(("fletcher32",))
        else:
            raise ChunkIndexError(f"{where} uses HDF5 filter {code} ({name.decode(errors='replace')}), which the "
                                  f"chunk index cannot decode (supported: {', '.join(Codec.SUPPORTED)})")
    return tuple(out)


def _codec(ds: h5py.Dataset, chunk_rows: int | None, filters: tuple[tuple[Any, ...], ...]) -> Codec:
    fill = np.array(ds.fillvalue, dtype=ds.dtype).tobytes().hex()
    return Codec(ds.dtype.str, tuple(int(n) for n in ds.shape[1:]), chunk_rows, filters, fill)


@dataclass
class _VarWindows:
    offset: np.ndarray
    nbytes: np.ndarray
    codec: list[str]
    inline: list[bytes | None]


def _var_windows(ds: h5py.Dataset, starts: np.ndarray, stops: np.ndarray, window_rows: int, *,
                 inline_bytes: int, where: str) -> _VarWindows:
    """Where each window's rows of ``ds`` are stored: one chunk, a slice of contiguous data, or inline."""
    if ds.dtype.kind not in "biuf":
        raise ChunkIndexError(f"{where} has type {ds.dtype}, not a number: it cannot be indexed")
    n = len(starts)
    offset = np.full(n, -1, dtype="i8")
    nbytes = np.zeros(n, dtype="i8")
    inline: list[bytes | None] = [None] * n
    dsid = ds.id
    layout = dsid.get_create_plist().get_layout()
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    if layout == h5py.h5d.CHUNKED:
        chunks = ds.chunks
        if chunks[0] != window_rows or tuple(chunks[1:]) != tuple(ds.shape[1:]):
            raise ChunkIndexError(f"{where} is chunked {chunks}, not in windows of {window_rows} whole rows like the "
                                  "coordinates: it cannot be indexed with them")
        base = _codec(ds, int(chunks[0]), _filters(ds, where))
        codecs = [base.to_json()] * n
        infos: list[Any] = []
        dsid.chunk_iter(infos.append)
        for info in infos:
            k = int(info.chunk_offset[0]) // window_rows
            if not 0 <= k < n:
                continue
            offset[k], nbytes[k] = int(info.byte_offset), int(info.size)
            if info.filter_mask:
                codecs[k] = base.without(int(info.filter_mask)).to_json()
            if info.size <= inline_bytes:
                _mask, data = dsid.read_direct_chunk(info.chunk_offset)
                inline[k] = bytes(data)
        return _VarWindows(offset, nbytes, codecs, inline)
    raw = _codec(ds, None, ()).to_json()
    if layout == h5py.h5d.CONTIGUOUS:
        base_offset = dsid.get_offset()
        if base_offset is not None:
            offset[:] = base_offset + starts * row_bytes
            nbytes[:] = (stops - starts) * row_bytes
            for k in range(n):
                if nbytes[k] <= inline_bytes:
                    inline[k] = ds[int(starts[k]):int(stops[k])].tobytes()
        return _VarWindows(offset, nbytes, [raw] * n, inline)
    # COMPACT: the data sit in the object header; copy each window's rows into the index
    values = ds[()]
    for k in range(n):
        inline[k] = values[int(starts[k]):int(stops[k])].tobytes()
        nbytes[k] = len(inline[k] or b"")
    return _VarWindows(offset, nbytes, [raw] * n, inline)


def _select_variables(group: h5py.Group, nrows: int, variables: Any, required: Sequence[str],
                      where: str) -> list[str]:
    if variables is None or variables == "all":
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[0] == nrows and obj.dtype.kind in "biuf":
                names.append(name)

        if variables == "all":
            group.visititems(visit)
        else:
            for name, obj in group.items():
                visit(name, obj)
        chosen = list(dict.fromkeys([*required, *sorted(names)]))
    else:
        chosen = list(dict.fromkeys([*required, *(v.strip("/") for v in variables)]))
    for v in chosen:
        obj = group.get(v)
        if not isinstance(obj, h5py.Dataset):
            raise ChunkIndexError(f"{where}/{v} is missing: it cannot be indexed")
        if not obj.shape or obj.shape[0] != nrows:
            raise ChunkIndexError(f"{where}/{v} has shape {obj.shape}, not {nrows} rows like the coordinates")
    return chosen


def _scalar(h5: h5py.File, path: str, granule: str) -> Any:
    obj = h5.get(path)
    if not isinstance(obj, h5py.Dataset):
        raise ChunkIndexError(f"{granule}: {path} is missing")
    return obj[()].ravel()[0]


def _windows_of(ref: h5py.Dataset) -> tuple[int, np.ndarray, np.ndarray]:
    n = int(ref.shape[0])
    rows = int(ref.chunks[0]) if ref.chunks else WINDOW_ROWS_CONTIGUOUS
    starts = np.arange(0, n, rows, dtype="i8")
    return rows, starts, np.minimum(starts + rows, n)


def _atl03_points(h5: h5py.File, beam: str, starts: np.ndarray, stops: np.ndarray, granule: str
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per photon window: (lon, lat, delta_time, extra margin in metres) from the geolocation segments."""
    geo = h5.get(f"{beam}/geolocation")
    need = ("ph_index_beg", "segment_ph_cnt", "reference_photon_lat", "reference_photon_lon", "delta_time")
    if geo is None or any(n not in geo for n in need):
        raise ChunkIndexError(f"{granule}: {beam}/geolocation lacks {', '.join(need)}: cannot place photon windows")
    beg = geo["ph_index_beg"][()].astype("i8") - 1
    cnt = geo["segment_ph_cnt"][()].astype("i8")
    lat, lon, t = geo["reference_photon_lat"][()], geo["reference_photon_lon"][()], geo["delta_time"][()]
    has = (beg >= 0) & (cnt > 0)
    beg, end, lat, lon, t = beg[has], beg[has] + cnt[has], lat[has], lon[has], t[has]
    out = []
    for a, b in zip(starts, stops):
        lo = int(np.searchsorted(end, a, side="right"))  # first segment ending after a
        hi = int(np.searchsorted(beg, b, side="left"))    # segments starting before b
        sel = slice(lo, max(lo, hi))
        out.append((lon[sel], lat[sel], t[sel], ATL03_SEGMENT_MARGIN_M))
    return out


def _read_rows(fh: Any, vw: _VarWindows, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """All rows of a dataset, decoded window by window from the stored bytes (no h5py data path)."""
    parts = []
    for k, (a, b) in enumerate(zip(starts, stops)):
        codec = Codec.from_json(vw.codec[k])
        n = int(b - a)
        if vw.inline[k] is not None:
            parts.append(codec.decode(vw.inline[k], n))
        elif vw.offset[k] < 0:
            parts.append(codec.fill_rows(n))
        else:
            parts.append(codec.decode(fh.pread(int(vw.offset[k]), int(vw.nbytes[k])), n))
    return np.concatenate(parts) if parts else np.array([])

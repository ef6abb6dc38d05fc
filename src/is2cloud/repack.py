"""Cloud-optimized copies of granules: paged aggregation, optional rechunking (notebook 06).

>>> report = repack("ATL03_..._006_01.h5", "ATL03_..._paged.h5")                 # doctest: +SKIP
>>> report = repack(src, dst, page_size=4 * 2**20, chunk_rows=100_000)          # doctest: +SKIP
>>> print(layout_summary(src)); print(layout_summary(dst))                      # doctest: +SKIP

:func:`repack` writes the copy with h5py, so it runs wherever the book runs:

* the file uses HDF5's **paged aggregation** (file-space strategy ``PAGE``) with the page size asked
  for (default the published ``h5repack -S PAGE -G 8000000``; ``"auto"``: :func:`auto_page_size`, the
  smallest page from 1 MiB that holds the granule's metadata), free-space tracking persisted in the
  file and a free-space threshold of 1 byte; metadata then sits in a few metadata pages instead of
  being scattered between the data chunks, so a reader fetches it in a few page-sized requests;
* every group, dataset and attribute is re-created from the source's own creation property lists and
  datatypes (layout, filters, fill value, attribute and link order, timestamps), so COMPACT datasets
  stay COMPACT and values stay identical byte for byte; chunks are copied as stored (no
  decompression) unless the dataset is rechunked;
* dimension scales are re-attached (``Group.copy`` would leave ``DIMENSION_LIST`` pointing into the
  source file);
* ``chunk_rows`` rechunks the record datasets (chunked along an unlimited first dimension, more than
  :data:`MIN_RECHUNK_ROWS` rows per chunk) to that many rows per chunk; NSIDC's cloud-optimized v007
  uses 100,000 elements;
* the file keeps the default (earliest) library version bounds, so HDF5 1.10 tools read it.

:func:`run_h5repack` runs the published command (:func:`h5repack_command`) where ``h5repack`` is
installed (conda-forge's ``hdf5``, Debian's ``hdf5-tools``). :func:`repack_to_s3` repacks an object into
another bucket, atomically, recording the source's ETag in the copy's S3 metadata.
:func:`layout_summary` is a small ``h5stat``: file-space strategy, layouts, chunk sizes, and how much
metadata the file has and how scattered it is.

Every writer goes through a temporary file renamed over the destination at the end: an interrupted or
failed repack leaves nothing under the destination name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5g, h5o, h5s, h5t

from is2cloud.progress import Progress

__all__ = ["AUTO", "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "MIN_PAGE_SIZE", "LayoutSummary", "RepackError",
           "RepackReport", "auto_page_size", "h5repack_command", "layout_summary", "layout_table", "repack",
           "repack_to_s3", "run_h5repack"]

DEFAULT_PAGE_SIZE = 8_000_000  # h5cloud's `h5repack -S PAGE -G 8000000`
MIN_PAGE_SIZE = 4 * 2**10
MAX_PAGE_SIZE = 64 * 2**20
AUTO = "auto"  # page_size=AUTO: auto_page_size(source)
MIN_AUTO_PAGE_SIZE = 2**20
AUTO_HEADROOM = 1.1  # the page auto_page_size picks holds the source's metadata with 10 % to spare
BLOCK_BYTES = 64 * 2**20  # rows read and written at a time when rechunking
DOWNLOAD_RETRIES = 3  # further downloads of a source whose body was cut short
# Chunks of this many rows or fewer are not rechunked, as in NSIDC's `optimize-atl03.py` (`--min_chunk`):
# e.g. ATL06's residual histograms, 14 rows of 700 bins per chunk, would become 280 MB chunks.
MIN_RECHUNK_ROWS = 500
STRATEGIES = {h5f.FSPACE_STRATEGY_FSM_AGGR: "FSM_AGGR", h5f.FSPACE_STRATEGY_PAGE: "PAGE",
              h5f.FSPACE_STRATEGY_AGGR: "AGGR", h5f.FSPACE_STRATEGY_NONE: "NONE"}
_LAYOUTS = {h5d.COMPACT: "compact", h5d.CONTIGUOUS: "contiguous", h5d.CHUNKED: "chunked"}
_SCALE_LINKS = ("DIMENSION_LIST", "REFERENCE_LIST")  # object references: rebuilt by attaching the scales
_INSTALL_HINT = "install conda-forge's `hdf5` or Debian's `hdf5-tools` (apt-get install hdf5-tools)"



class RepackError(RuntimeError):
    """A granule could not be repacked; the message names the file and says why."""


@dataclass(frozen=True)
class RepackReport:
    """What one repack did."""

    src: str
    dst: str
    tool: str  # "h5py" or "h5repack"
    page_size: int
    chunk_rows: int | None
    src_bytes: int
    dst_bytes: int
    seconds: float
    datasets: int
    datasets_rechunked: int
    source_etag: str | None = None  # repack_to_s3: the ETag of the object that was repacked

    @property
    def overhead(self) -> float:
        """Relative size change of the copy (0.25: 25 % larger)."""
        return self.dst_bytes / self.src_bytes - 1 if self.src_bytes else 0.0

    def __str__(self) -> str:
        chunks = (f", {self.datasets_rechunked} datasets rechunked to {self.chunk_rows:,} rows"
                  if self.chunk_rows else "")
        return (f"{Path(self.src).name} -> {self.dst} ({self.tool}, page {self.page_size:,} B{chunks}): "
                f"{self.src_bytes / 1e6:.2f} MB -> {self.dst_bytes / 1e6:.2f} MB ({self.overhead:+.1%}), "
                f"{self.datasets} datasets, {self.seconds:.2f} s")


# -- checks --------------------------------------------------------------------------------------


def _check_page_size(page_size: int | str, *, auto: bool = False) -> int | str:
    """``page_size`` checked: an integer number of bytes in range, or (where ``auto``) :data:`AUTO`."""
    if auto and page_size == AUTO:
        return AUTO
    if isinstance(page_size, bool) or not isinstance(page_size, (int, np.integer)):
        choices = f' or "{AUTO}"' if auto else ""
        raise ValueError(f"page_size must be an integer number of bytes{choices}, not {page_size!r}")
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size {page_size:,} bytes is outside {MIN_PAGE_SIZE:,} (4 KiB) to "
                         f"{MAX_PAGE_SIZE:,} (64 MiB); the published value is {DEFAULT_PAGE_SIZE:,}")
    return int(page_size)


def _check_chunk_rows(chunk_rows: int | None) -> int | None:
    if chunk_rows is None:
        return None
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer or None, not {chunk_rows!r}")
    return int(chunk_rows)


def _check_source(src: str | os.PathLike[str]) -> Path:
    path = Path(src).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no granule at {str(path)!r}")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(16)
        raise RepackError(f"{path.name} is not an HDF5 file (it starts with {head!r})")
    return path


@contextmanager
def _atomic_output(dst: str | os.PathLike[str], src: Path) -> Iterator[Path]:
    """A temporary file beside ``dst``, renamed to ``dst`` when the block succeeds and removed otherwise."""
    final = Path(dst).expanduser().absolute()
    if final.is_dir():
        raise RepackError(f"cannot write {str(final)!r}: it is a directory")
    if final.exists() and final.samefile(src):
        raise RepackError(f"cannot write {str(final)!r}: it is the source granule")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise RepackError(f"cannot write {str(final)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


# -- the h5py copy -------------------------------------------------------------------------------


def _copy_attrs(src: Any, dst: Any) -> None:
    """Every attribute of ``src`` onto ``dst`` with its own datatype and dataspace (the dimension-scale
    references excepted); fixed-size values are copied as raw bytes, so nothing is converted."""
    for name in src.attrs:
        if name in _SCALE_LINKS:
            continue
        bname = name.encode()
        aid = h5a.open(src.id, bname)
        tid, space = aid.get_type(), aid.get_space()
        out = h5a.create(dst.id, bname, tid, space)
        if space.get_simple_extent_type() == h5s.NULL:
            continue
        if tid.detect_class(h5t.VLEN) or tid.detect_class(h5t.REFERENCE) or (
                isinstance(tid, h5t.TypeStringID) and tid.is_variable_str()):
            out.write(np.asarray(src.attrs[name], dtype=aid.dtype))  # h5py converts variable-size values
            continue
        buf = np.empty(space.shape, dtype=aid.dtype)
        aid.read(buf, mtype=tid)
        out.write(buf, mtype=tid)


def _raw_type(ds: h5py.Dataset) -> h5t.TypeID | None:
    """The file datatype to copy ``ds``'s values through unconverted, or None for variable-size types."""
    tid = ds.id.get_type()
    if tid.detect_class(h5t.VLEN) or tid.detect_class(h5t.REFERENCE) or (
            isinstance(tid, h5t.TypeStringID) and tid.is_variable_str()):
        return None
    return tid


def _rows_per_block(ds: h5py.Dataset, chunk_rows: int) -> int:
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    return chunk_rows * max(1, BLOCK_BYTES // (chunk_rows * row_bytes))


def _copy_values(src: h5py.Dataset, dsid: h5d.DatasetID, rechunked: bool, chunk_rows: int) -> None:
    layout = src.id.get_create_plist().get_layout()
    if src.size == 0 or (layout != h5d.COMPACT and src.id.get_storage_size() == 0):
        return  # nothing stored (all fill value): nothing to copy
    mtype = _raw_type(src)
    if mtype is None:
        h5py.Dataset(dsid)[...] = src[...]
        return
    if layout == h5d.CHUNKED and not rechunked:
        def copy_chunk(info: Any) -> None:
            mask, data = src.id.read_direct_chunk(info.chunk_offset)
            dsid.write_direct_chunk(info.chunk_offset, data, mask)
        src.id.chunk_iter(copy_chunk)
        return
    if src.ndim == 0 or layout != h5d.CHUNKED:
        buf = np.empty(src.shape, dtype=src.dtype)
        src.id.read(h5s.ALL, h5s.ALL, buf, mtype=mtype)
        dsid.write(h5s.ALL, h5s.ALL, buf, mtype=mtype)
        return
    step = _rows_per_block(src, chunk_rows)
    for start in range(0, src.shape[0], step):
        count = (min(step, src.shape[0] - start),) + src.shape[1:]
        offset = (start,) + (0,) * (src.ndim - 1)
        buf = np.empty(count, dtype=src.dtype)
        mspace = h5s.create_simple(count)
        fspace = src.id.get_space()
        fspace.select_hyperslab(offset, count)
        src.id.read(mspace, fspace, buf, mtype=mtype)
        fspace = dsid.get_space()
        fspace.select_hyperslab(offset, count)
        dsid.write(mspace, fspace, buf, mtype=mtype)


def _is_record_dataset(ds: h5py.Dataset) -> bool:
    """The along-track variables that rechunking targets: chunked along an unlimited first dimension with
    more than :data:`MIN_RECHUNK_ROWS` rows per chunk (tables of a few rows per chunk keep theirs)."""
    return ds.chunks is not None and ds.ndim >= 1 and ds.maxshape[0] is None and ds.chunks[0] > MIN_RECHUNK_ROWS


class _Copier:
    """Copies a file object by object (see the module docstring)."""

    def __init__(self, src: h5py.File, dst: h5py.File, chunk_rows: int | None, progress: bool | None):
        self.src, self.dst, self.chunk_rows = src, dst, chunk_rows
        self.total = sum(1 for _ in _datasets(src))
        self.bar = Progress(self.total, f"repack {Path(src.filename).name}: datasets", progress, stream=sys.stderr)
        self.done = 0
        self.rechunked = 0
        self.copied: dict[int, str] = {}  # object address in the source -> its (first) path
        self.scales: list[tuple[str, int, int]] = []  # (dataset, axis, scale address) in attachment order

    def run(self) -> None:
        _copy_attrs(self.src, self.dst)
        self.group(self.src, self.dst, "")
        for path, axis, scale in self.scales:  # by address: h5py's Dataset.name is slow on a dereferenced scale
            self.dst[path].dims[axis].attach_scale(self.dst[self.copied[scale]])

    def group(self, src: h5py.Group, dst: h5py.Group, prefix: str) -> None:
        for name in src:
            path = f"{prefix}/{name}"
            link = src.get(name, getlink=True)
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                dst[name] = link
                continue
            obj = src[name]
            addr = h5o.get_info(obj.id).addr
            if addr in self.copied:
                dst[name] = dst[self.copied[addr]]  # another hard link to an object already copied
                continue
            self.copied[addr] = path
            bname = name.encode()
            if isinstance(obj, h5py.Dataset):
                self.dataset(obj, dst, bname, path)
            elif isinstance(obj, h5py.Group):
                child = h5py.Group(h5g.create(dst.id, bname, gcpl=obj.id.get_create_plist()))
                _copy_attrs(obj, child)
                self.group(obj, child, path)
            else:  # a named datatype
                obj.id.copy().commit(dst.id, bname)
                _copy_attrs(obj, dst[name])

    def dataset(self, src: h5py.Dataset, parent: h5py.Group, bname: bytes, path: str) -> None:
        dcpl = src.id.get_create_plist()
        rechunked = (self.chunk_rows is not None and _is_record_dataset(src)
                     and src.chunks[0] != self.chunk_rows)
        if rechunked:
            dcpl.set_chunk((self.chunk_rows,) + tuple(src.chunks[1:]))
            self.rechunked += 1
        tid = src.id.get_type()
        if tid.committed():
            tid = tid.copy()
        dsid = h5d.create(parent.id, bname, tid, src.id.get_space(), dcpl=dcpl)
        try:
            _copy_values(src, dsid, rechunked, self.chunk_rows or 0)
        except Exception as exc:
            raise RepackError(f"{Path(self.src.filename).name}: cannot copy the values of {path}: {exc}") from exc
        copy = h5py.Dataset(dsid)
        _copy_attrs(src, copy)
        if "DIMENSION_LIST" in src.attrs:
            for axis in range(src.ndim):
                self.scales.extend((path, axis, h5o.get_info(scale.id).addr) for scale in src.dims[axis].values())
        self.done += 1
        self.bar.update()


def _datasets(f: h5py.File) -> Iterator[h5py.Dataset]:
    found: list[h5py.Dataset] = []
    f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    yield from found


def auto_page_size(path_or_file: str | os.PathLike[str] | h5py.File) -> int:
    """The page size ``page_size="auto"`` picks for a granule: the smallest power of two, from 1 MiB, that
    holds all of the granule's metadata (object headers, chunk indexes, heaps:
    :attr:`LayoutSummary.metadata_bytes`) with 10 % to spare, and at most the published 8,000,000 bytes.

    A reader fetches metadata pages whole (h5py's page buffer asks for whole pages), so metadata in one
    page is one GET; a page much larger than the metadata fetches free space with it, and makes the copy
    larger (the unused ends of pages). The published 8,000,000 bytes suit a multi-GB ATL03 granule, whose
    metadata fills several such pages; a 57 MB ATL06 granule has about 1.8 MB of metadata and gets 2 MiB
    pages (copy 2 % larger than the source instead of 11 %, metadata in one 2 MiB GET instead of 8 MB).
    """
    meta = layout_summary(path_or_file).metadata_bytes
    page = MIN_AUTO_PAGE_SIZE
    while page < AUTO_HEADROOM * meta and page * 2 <= DEFAULT_PAGE_SIZE:
        page *= 2
    return page if page >= AUTO_HEADROOM * meta else DEFAULT_PAGE_SIZE


def repack(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, page_size: int | str = DEFAULT_PAGE_SIZE,
           chunk_rows: int | None = None, progress: bool | None = None) -> RepackReport:
    """Write a cloud-optimized copy of the granule ``src`` to ``dst`` (both local paths) with h5py.

    Paged aggregation at ``page_size`` bytes (4 KiB to 64 MiB, or ``"auto"``: :func:`auto_page_size` of the
    source) with persisted free-space tracking;
    ``chunk_rows`` rechunks the record datasets (None keeps the source's chunks). ``progress``: a progress
    line of datasets copied on stderr (default: when someone watches, :mod:`is2cloud.progress`). Values, attributes, layouts, filters and dimension
    scales are those of the source. Raises :class:`RepackError` (non-HDF5 input, unwritable output),
    ``FileNotFoundError`` or ``ValueError``; on any failure or interruption ``dst`` is not created.
    """
    page_size = _check_page_size(page_size, auto=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    source = _check_source(src)
    t0 = time.perf_counter()
    with _atomic_output(dst, source) as tmp, h5py.File(source, "r") as fin:
        if page_size == AUTO:
            page_size = auto_page_size(fin)
        track_order = bool(fin.id.get_create_plist().get_link_creation_order())
        with h5py.File(tmp, "w", fs_strategy="page", fs_page_size=page_size, fs_persist=True, fs_threshold=1,
                       track_order=track_order) as fout:
            copier = _Copier(fin, fout, chunk_rows, progress)
            copier.run()
    final = Path(dst).expanduser().absolute()
    return RepackReport(src=str(source), dst=str(final), tool="h5py", page_size=page_size, chunk_rows=chunk_rows,
                        src_bytes=source.stat().st_size, dst_bytes=final.stat().st_size,
                        seconds=time.perf_counter() - t0, datasets=copier.total,
                        datasets_rechunked=copier.rechunked)


# -- h5repack ------------------------------------------------------------------------------------


def h5repack_command(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                     page_size: int = DEFAULT_PAGE_SIZE) -> list[str]:
    """The published command, ``h5repack -S PAGE -G 8000000``, plus ``-P 1`` to persist free-space tracking
    (without it h5repack writes a PAGE file whose free space is not tracked)."""
    return ["h5repack", "-S", "PAGE", "-G", str(_check_page_size(page_size)), "-P", "1", os.fspath(src),
            os.fspath(dst)]


def run_h5repack(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, page_size: int = DEFAULT_PAGE_SIZE,
                 timeout: float | None = None) -> RepackReport:
    """Run :func:`h5repack_command` (``h5repack`` must be on PATH), writing ``dst`` atomically."""
    page_size = _check_page_size(page_size)
    exe = shutil.which("h5repack")
    if exe is None:
        raise RepackError(f"h5repack is not on PATH: {_INSTALL_HINT}, or use is2cloud.repack.repack (h5py)")
    source = _check_source(src)
    t0 = time.perf_counter()
    with _atomic_output(dst, source) as tmp:
        cmd = [exe, *h5repack_command(source, tmp, page_size)[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RepackError(f"h5repack failed on {source.name} (exit {done.returncode}): "
                              f"{detail[-1] if detail else 'no message'}")
    final = Path(dst).expanduser().absolute()
    with h5py.File(final, "r") as f:
        n = sum(1 for _ in _datasets(f))
    return RepackReport(src=str(source), dst=str(final), tool="h5repack", page_size=page_size, chunk_rows=None,
                        src_bytes=source.stat().st_size, dst_bytes=final.stat().st_size,
                        seconds=time.perf_counter() - t0, datasets=n, datasets_rechunked=0)


# -- S3 ------------------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"{url!r} is not an S3 object URL (s3://bucket/key.h5)")
    return bucket, key


def repack_to_s3(src_url: str, dst_url: str, *, credentials: Any, out_credentials: Any = None,
                 page_size: int | str = DEFAULT_PAGE_SIZE, chunk_rows: int | None = None,
                 progress: bool | None = None) -> RepackReport:
    """Repack the object ``src_url`` (``s3://``, or a local path) into the object ``dst_url``.

    The source is downloaded to a temporary directory, repacked there (:func:`repack`) and uploaded in
    one PUT or one multipart upload that is aborted on failure, so ``dst_url`` never holds a partial
    object. The copy's S3 metadata records the source (``source-url``, ``source-etag``), so a stale copy
    can be recognised, and the page size (``page-size``), which a reader needs to size its page buffer. ``credentials`` read the source, ``out_credentials`` (default: the same) write
    the copy. A destination in the read-only archive bucket (``settings.archive_bucket``) is refused
    before any work.
    """
    from is2cloud.credentials import CredentialsError
    from is2cloud.geoparquet import OutputPathError, _s3fs, _upload_atomic
    from is2cloud.settings import get_settings

    if not dst_url.startswith("s3://"):
        raise ValueError(f"{dst_url!r} is not an s3:// URL; use repack() for a local copy")
    bucket, key = _split_url(dst_url)
    archive = get_settings().archive_bucket
    if bucket == archive:
        raise OutputPathError(f"refusing to write {dst_url}: {archive} is the read-only archive bucket; "
                              "write the copy to your own bucket (settings.output_bucket)")
    page_size = _check_page_size(page_size, auto=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    out_credentials = out_credentials if out_credentials is not None else credentials
    if out_credentials is None:
        raise CredentialsError(f"missing credentials for {dst_url}: pass credentials= (and out_credentials= "
                               "when another identity writes the copy)")
    with tempfile.TemporaryDirectory(prefix="is2cloud-repack-") as tmp:
        etag: str | None = None
        if src_url.startswith("s3://"):
            if credentials is None:
                raise CredentialsError(f"missing credentials for {src_url}: pass credentials=")
            local = Path(tmp) / Path(_split_url(src_url)[1]).name
            etag = _download(src_url, local, credentials)
        else:
            local = Path(src_url)
        out = Path(tmp) / "repacked.h5"
        report = repack(local, out, page_size=page_size, chunk_rows=chunk_rows, progress=progress)
        fs = _s3fs(out_credentials, None, dst_url)
        metadata = {"source-url": src_url, **({"source-etag": etag} if etag else {}),
                    "page-size": str(report.page_size)}
        _upload_atomic(fs, out, bucket, key, dst_url, content_type="application/x-hdf5", metadata=metadata)
    return RepackReport(**{**asdict(report), "src": src_url, "dst": dst_url, "source_etag": etag})


def _download(url: str, local: Path, credentials: Any) -> str:
    """Stream ``url`` to ``local``; returns the object's ETag (without quotes)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from is2cloud.geoparquet import _describe_os_error

    bucket, key = _split_url(url)
    client = credentials.require_valid().boto3_client("s3")
    for attempt in range(DOWNLOAD_RETRIES + 1):
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
            with open(local, "wb") as fh:
                shutil.copyfileobj(obj["Body"], fh, 8 * 2**20)
            return str(obj["ETag"]).strip('"')
        except ClientError as exc:  # botocore has already retried 5xx answers
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise FileNotFoundError(f"no object at {url}") from None
            raise RepackError(f"cannot read {url}: {code or 'S3 error'}") from None
        except BotoCoreError as exc:  # e.g. the body cut short by a connection reset: download it again
            if attempt == DOWNLOAD_RETRIES:
                raise RepackError(f"cannot read {url} (after {attempt + 1} attempts): {_describe_os_error(exc)}"
                                  ) from None
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


# -- layout summary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutSummary:
    """An ``h5stat``-like summary of how a file is laid out (:func:`layout_summary`).

    ``raw_bytes`` are the stored bytes of the dataset values outside object headers (chunks and
    contiguous data); ``metadata_bytes`` the object headers (with attributes and COMPACT data), chunk
    indexes, group B-trees and heaps (``H5Oget_native_info``); ``free_bytes`` the free space HDF5 tracks;
    ``other_bytes`` the rest (superblock, free-space managers, untracked gaps, the unused end of the last
    pages). ``metadata_extents`` counts the separate byte runs that are not raw data (about one per gap
    between chunks in a file whose metadata is interleaved with the data); ``metadata_blocks`` counts the
    ``block_size``-aligned blocks holding an object header: about the number of page-sized reads a
    reader needs for the metadata with a block cache or page buffer of that size.
    """

    path: str
    file_size: int
    strategy: str  # PAGE, FSM_AGGR, AGGR or NONE
    persist: bool
    threshold: int
    page_size: int | None  # None unless the strategy is PAGE
    superblock: int
    groups: int
    datasets: int
    chunked: int
    compact: int
    contiguous: int
    chunks: int
    chunk_elements: dict[int, int]  # elements per chunk -> number of chunked datasets
    median_chunk_bytes: int  # stored (compressed) bytes of the median chunk
    raw_bytes: int
    metadata_bytes: int
    free_bytes: int
    other_bytes: int
    object_headers: int
    object_header_bytes: int
    metadata_extents: int
    block_size: int
    metadata_blocks: int
    file_blocks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        page = f", page {self.page_size:,} B" if self.page_size else ""
        typical = ", ".join(f"{n:,} x {e:,}" for e, n in sorted(self.chunk_elements.items(), key=lambda kv: -kv[1])[:3])
        return "\n".join([
            f"{Path(self.path).name}: {self.file_size / 1e6:.2f} MB, superblock v{self.superblock}",
            f"  file space  {self.strategy}{page}, persist {self.persist}, threshold {self.threshold}",
            (f"  objects     {self.groups} groups, {self.datasets} datasets: {self.chunked} chunked, "
             f"{self.compact} compact, {self.contiguous} contiguous"),
            (f"  chunks      {self.chunks:,} stored; datasets x elements per chunk: {typical or '-'}; "
             f"median {self.median_chunk_bytes:,} B stored"),
            (f"  bytes       raw {self.raw_bytes / 1e6:.2f} MB, metadata {self.metadata_bytes / 1e6:.3f} MB "
             f"({self.object_headers} object headers: {self.object_header_bytes / 1e6:.3f} MB), free "
             f"{self.free_bytes / 1e6:.3f} MB, other {self.other_bytes / 1e6:.3f} MB"),
            (f"  scattering  metadata in {self.metadata_extents:,} separate runs; object headers in "
             f"{self.metadata_blocks} of {self.file_blocks} blocks of {self.block_size:,} B"),
        ])


def layout_table(summaries: dict[str, LayoutSummary]):  # -> pandas.DataFrame
    """Layout summaries side by side (one column each, e.g. ``{"original": ..., "copy": ...}``): the rows that
    differ between a scattered and a paged file."""
    import pandas as pd

    rows = {
        "file size (MB)": lambda s: f"{s.file_size / 1e6:,.2f}",
        "file-space strategy": lambda s: s.strategy + (f", page {s.page_size:,} B" if s.page_size else ""),
        "free space tracked across opens": lambda s: "yes" if s.persist else "no",
        "datasets (chunked / compact / contiguous)": lambda s: f"{s.datasets} ({s.chunked} / {s.compact} / {s.contiguous})",
        "chunks stored": lambda s: f"{s.chunks:,}",
        "median chunk (bytes stored)": lambda s: f"{s.median_chunk_bytes:,}",
        "raw data (MB)": lambda s: f"{s.raw_bytes / 1e6:,.2f}",
        "metadata (MB)": lambda s: f"{s.metadata_bytes / 1e6:,.3f}",
        "free + other (MB)": lambda s: f"{(s.free_bytes + s.other_bytes) / 1e6:,.2f}",
        "separate metadata runs": lambda s: f"{s.metadata_extents:,}",
        "blocks holding object headers": lambda s: f"{s.metadata_blocks} of {s.file_blocks} ({s.block_size:,} B each)",
    }
    return pd.DataFrame({name: {row: fn(s) for row, fn in rows.items()} for name, s in summaries.items()})


def layout_summary(path_or_file: str | os.PathLike[str] | h5py.File, *, block_size: int | None = None
                   ) -> LayoutSummary:
    """Summarize the layout of an HDF5 file (a path or an open ``h5py.File``, e.g. on an s3fs file object).

    ``block_size`` sets the blocks counted by ``metadata_blocks``; default: the file's page size when it
    is paged, else :data:`DEFAULT_PAGE_SIZE`, so an original and its paged copy compare directly.
    Reads only metadata (object headers and chunk indexes), never the values.
    """
    if isinstance(path_or_file, h5py.File):
        return _summarize(path_or_file, block_size)
    path = _check_source(path_or_file)
    with h5py.File(path, "r") as f:
        return _summarize(f, block_size)


def _summarize(f: h5py.File, block_size: int | None) -> LayoutSummary:
    fcpl = f.id.get_create_plist()
    strategy, persist, threshold = fcpl.get_file_space_strategy()
    paged = strategy == h5f.FSPACE_STRATEGY_PAGE
    page_size = int(fcpl.get_file_space_page_size()) if paged else None
    block = int(block_size or page_size or DEFAULT_PAGE_SIZE)
    layouts: Counter[str] = Counter()
    elements: Counter[int] = Counter()
    extents: list[tuple[int, int]] = []  # raw data (offset, size): chunks, then contiguous data
    chunk_bytes: list[int] = []
    headers: list[tuple[int, int]] = []  # object headers (address, size)
    indexes = 0  # chunk indexes, group B-trees and heaps, dense attribute storage
    groups = 0
    seen: set[int] = set()

    def header(info: Any) -> None:
        nonlocal indexes
        seen.add(info.addr)
        headers.append((info.addr, info.hdr.space.total))
        ms = info.meta_size
        indexes += ms.obj.index_size + ms.obj.heap_size + ms.attr.index_size + ms.attr.heap_size

    def visit(_: str, obj: Any) -> None:
        nonlocal groups
        info = h5o.get_info(obj.id)
        if info.addr in seen:
            return
        header(info)
        if isinstance(obj, h5py.Group):
            groups += 1
        if not isinstance(obj, h5py.Dataset):
            return
        layout = obj.id.get_create_plist().get_layout()
        layouts[_LAYOUTS.get(layout, str(layout))] += 1
        if layout == h5d.CHUNKED:
            elements[int(np.prod(obj.chunks, dtype=np.int64))] += 1
            def chunk(c: Any) -> None:
                extents.append((c.byte_offset, c.size))
                chunk_bytes.append(c.size)
            obj.id.chunk_iter(chunk)
        elif layout == h5d.CONTIGUOUS and obj.id.get_offset() is not None:
            extents.append((obj.id.get_offset(), obj.id.get_storage_size()))

    header(h5o.get_info(f.id))
    f.visititems(visit)
    size = int(f.id.get_filesize())
    raw = int(sum(n for _, n in extents))
    free = int(f.id.get_freespace())
    header_bytes = int(sum(n for _, n in headers))
    runs, pos = 0, 0
    for offset, n in sorted(extents):
        if offset > pos:
            runs += 1
        pos = max(pos, offset + n)
    runs += pos < size
    blocks = {b for addr, n in headers for b in range(addr // block, (addr + max(n, 1) - 1) // block + 1)}
    return LayoutSummary(
        path=str(f.filename), file_size=size, strategy=STRATEGIES.get(strategy, str(strategy)),
        persist=bool(persist), threshold=int(threshold), page_size=page_size,
        superblock=int(fcpl.get_version()[0]), groups=groups, datasets=sum(layouts.values()),
        chunked=layouts["chunked"], compact=layouts["compact"], contiguous=layouts["contiguous"],
        chunks=len(chunk_bytes), chunk_elements=dict(elements),
        median_chunk_bytes=int(np.median(chunk_bytes)) if chunk_bytes else 0,
        raw_bytes=raw, metadata_bytes=header_bytes + indexes, free_bytes=free,
        other_bytes=size - raw - header_bytes - indexes - free, object_headers=len(headers),
        object_header_bytes=header_bytes, metadata_extents=runs, block_size=block,
        metadata_blocks=len(blocks), file_blocks=-(-size // block))

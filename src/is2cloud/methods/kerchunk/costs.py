"""What it costs to make kerchunk references (issue 12, part 2): the same granule translated side by
side with h5cloud's published call, no cache, a block cache, one whole-object read, and VirtualiZarr's
``HDFParser``, each measured from the embedded cloud's request ledger."""

from __future__ import annotations

from typing import Any

from is2cloud.methods.kerchunk.refs import open_options, translate
from is2cloud.methods.ranges import head_object, split_url
from is2cloud.parallel import blocks_released

__all__ = ["COST_CONFIGS", "FLOOR", "cache_of", "preparation_costs"]

# (label, open configuration or None for HDFParser)
COST_CONFIGS: tuple[tuple[str, str | None], ...] = (
    ("h5cloud's call (keywords ignored: s3fs read-ahead)", "h5cloud"),
    ("no cache", "none"),
    ("block cache (earthaccess sizes, every block kept)", "blockcache"),
    ("whole object in one read", "all"),
    ("VirtualiZarr HDFParser", None),
)


def cache_of(fs: Any, url: str, **open_kwargs: Any) -> dict[str, Any]:
    """The cache a file opened with ``fs.open(url, **open_kwargs)`` really uses (its class, block size
    and s3fs's own defaults): shows that h5cloud's ``default_fill_cache``/``default_cache_type``, which
    are ``S3FileSystem`` constructor keywords, change nothing when given to ``open``."""
    from is2cloud.methods.baseline import s3fs_defaults

    with fs.open(url, **open_kwargs) as f:
        cache = type(f.cache).__name__
        return {"open_kwargs": dict(open_kwargs), "cache": cache, "cache_name": getattr(f.cache, "name", cache),
                "block_size": int(f.blocksize), "s3fs_default": s3fs_defaults()}


def _hdfparser(url: str, credentials: Any, group: str | None = None) -> int:
    """VirtualiZarr's ``HDFParser`` as a user calls it (default reader) on the whole granule (or ``group``);
    number of arrays."""
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    bucket, _ = split_url(url)
    ms = HDFParser(group=group)(url, ObjectStoreRegistry({f"s3://{bucket}": credentials.obstore(bucket)}))

    def count(g: Any) -> int:
        return len(g.arrays) + sum(count(s) for s in g.groups.values())

    return count(ms._group)


FLOOR = "local file, no network (the floor of any configuration)"


def _local_copy(url: str, etag: str) -> str | None:
    """The path of the local archive's copy of the object at ``url`` when its MD5 is ``etag``, else None."""
    from is2cloud.methods.baseline import _local_copies

    hit = _local_copies().get((*split_url(url), etag))
    return str(hit) if hit else None


def preparation_costs(granule: Any, *, credentials: Any, cloud: Any, configs: Any = COST_CONFIGS,
                      scale: str | None = None, group: str | None = None,
                      floor: bool = False):  # -> pandas.DataFrame
    """Make one granule's references with every configuration of ``configs`` in turn, in one run, each
    measured by :func:`is2cloud.bench.measure` against ``cloud`` (the embedded cloud serving the granule;
    its ledger gives GETs and bytes). ``group`` (e.g. ``"gt1l"``; the ``group`` column): that group only
    (translate's CPU time grows with the number of datasets; the file's metadata is found the same way).
    One row per configuration: ``granule``, ``group``, ``size_MB``, ``config``, ``open`` (the ``fs.open``
    keywords), ``wall_s``, ``gets``, ``MB_read``, ``read_over_size`` (bytes read / object size), ``arrays``
    (references made: kerchunk's ``.zarray`` keys or HDFParser's arrays) and ``speedup`` (h5cloud's wall
    time / this one's). ``floor``: one more row, :data:`FLOOR`, the same translation of the local archive's
    copy of the object (same bytes, read from disk: no request, no network model), when there is one:
    the time no open configuration can beat, since it is the scan's own work (h5py and kerchunk's CPU).
    ``frame.attrs["measurements"]``: the :class:`~is2cloud.bench.Measurement` of each
    row (for the results table)."""
    import pandas as pd

    from is2cloud.bench import measure
    from is2cloud.methods.baseline import granule_source

    src = granule_source(granule)
    obj = head_object(credentials, *split_url(src.url))
    rows, ms = [], []
    local = _local_copy(src.url, obj.etag) if floor else None
    for label, config in [*configs, *([(FLOOR, "local")] if local else [])]:
        fs = credentials.fresh().s3fs()
        fs.invalidate_cache()
        with measure(f"references: {label}", method="kerchunk", cloud=cloud, scale=scale, record=False,
                     granules=1) as m:
            opts: dict[str, Any] = {}
            if config is None:
                arrays = _hdfparser(src.url, credentials, group)
            else:
                if config != "local":
                    opts = open_options(config, obj.size)  # type: ignore[arg-type]
                with (open(local, "rb") if config == "local"  # type: ignore[arg-type]
                      else blocks_released(fs.open(src.url, **opts))) as f:
                    # given a group, kerchunk opens the object again for the values it inlines: no cache
                    # there, so each inlined value costs one small GET in every row alike
                    refs, _ = translate(f, src.url, src.name, group=group,
                                        storage_options=dict(credentials.storage_options(), default_cache_type="none"))
                arrays = sum(1 for k in refs["refs"] if k.endswith(".zarray"))
        rows.append({"granule": src.name, "group": f"/{group}" if group else "/", "size_MB": obj.size / 1e6,
                     "config": label,
                     "open": (", ".join(f"{k}={v!r}" for k, v in opts.items()) if config not in (None, "local")
                              else "obstore block reader" if config is None else "open(<archive copy>, 'rb')"),
                     # no request ledger at AWS (earthdata mode): GETs and bytes are not known there
                     "wall_s": m.wall_s, "gets": m.gets,
                     "MB_read": None if m.get_bytes is None else m.get_bytes / 1e6,
                     "read_over_size": None if m.get_bytes is None else m.get_bytes / obj.size, "arrays": arrays})
        ms.append(m)
    frame = pd.DataFrame(rows)
    frame["speedup"] = frame["wall_s"].iloc[0] / frame["wall_s"]
    for m, row in zip(ms, frame.itertuples()):
        read = "bytes read not known" if pd.isna(row.read_over_size) else f"read {row.read_over_size:.2f}x the object"
        m.notes = f"{row.granule} ({row.size_MB:.1f} MB); {row.open}; {read}; {row.speedup:.1f}x faster than h5cloud's call"
    frame.attrs["measurements"] = ms  # the is2cloud.bench.Measurement of each row
    return frame

"""Example files for notebook 04's known limits: a copy of an ATL06 granule with COMPACT arrays, as ATL03's
calibration arrays are stored (the synthetic ATL06 granules, like NSIDC's, have none below
``gtx/land_ice_segments``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from is2cloud.methods.schema import TRACK_IDS

__all__ = ["COMPACT_BYTES", "with_compact"]

COMPACT_BYTES = 60_000  # below HDF5's 64 KiB limit for the raw data of a COMPACT dataset


def with_compact(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, name: str = "h_compact",
                 like: str = "h_li") -> Path:
    """Copy ``src`` to ``dst`` and add, in every beam's ``land_ice_segments``, a COMPACT dataset ``name``
    holding the first values of ``like`` (its bytes live in the object header, not in a chunk; HDF5 caps
    a COMPACT dataset at 64 KiB, so at most :data:`COMPACT_BYTES`). Everything else is untouched. Written
    to a temporary file first, so ``dst`` is never half-written."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    try:
        with h5py.File(tmp, "a") as f:
            for beam in TRACK_IDS:
                group = f.get(f"{beam}/land_ice_segments")
                if group is None:
                    continue
                if like not in group:
                    raise KeyError(f"{src}: {beam}/land_ice_segments has no {like!r} to copy")
                ds = group[like]
                data = np.ascontiguousarray(ds[: COMPACT_BYTES // ds.dtype.itemsize])
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.COMPACT)
                space = h5py.h5s.create_simple(data.shape)
                h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(data.dtype), space,
                                dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, data)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst

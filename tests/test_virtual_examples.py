"""Notebook 04's example file: a granule copy with COMPACT arrays (is2cloud.methods.virtual.examples)."""

from __future__ import annotations

import h5py
import numpy as np

from is2cloud.methods.virtual.examples import COMPACT_BYTES, with_compact


def test_with_compact_adds_a_compact_copy_of_a_variable(tmp_path):
    src = tmp_path / "g.h5"
    with h5py.File(src, "w") as f:
        f["gt1l/land_ice_segments/h_li"] = np.arange(30_000, dtype="f4")
        f["gt2r/land_ice_segments/h_li"] = np.arange(5, dtype="f4")
    dst = with_compact(src, tmp_path / "copy.h5")
    with h5py.File(dst) as f:
        for beam, n in (("gt1l", COMPACT_BYTES // 4), ("gt2r", 5)):
            ds = f[f"{beam}/land_ice_segments/h_compact"]
            assert ds.id.get_create_plist().get_layout() == h5py.h5d.COMPACT
            np.testing.assert_array_equal(ds[()], f[f"{beam}/land_ice_segments/h_li"][:n])
    assert not list(tmp_path.glob("*.part"))
    with h5py.File(src) as f:
        assert "h_compact" not in f["gt1l/land_ice_segments"]  # the source is untouched

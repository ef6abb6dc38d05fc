"""Test granules: a planned granule cut to a window of +/- half_m around the middle of its AOI crossing, and a
short ATL06 granule whose beams cross the antimeridian (with the AOIs tests query it with)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from shapely.geometry import Polygon

from is2cloud.aoi import load_aoi
from is2cloud.granules import GranuleSpec, plan_granules, write_atl06
from is2cloud.methods.schema import TRACK_IDS

REPO = Path(__file__).resolve().parents[1]


def short_spec(aoi: str, product: str, cycle: int, rgt: int, half_m: float) -> GranuleSpec:
    spec = next(s for s in plan_granules(REPO / "data" / aoi, product, [cycle], window="aoi", margin_m=0)
                if s.rgt == rgt)
    x0, x1 = spec.window
    mid = (x0 + x1) / 2
    return spec.with_window(mid - half_m, mid + half_m, reason="test window")


# The same 0.2 x 0.2 degree box across +-180 in three forms (a jump is a crossing only when asked: see is2cloud.aoi).
ANTIMERIDIAN_AOIS = [
    (179.8, 70.0, -179.8, 70.2),                                                     # a bbox with west > east
    Polygon([(179.8, 70.0), (180.2, 70.0), (180.2, 70.2), (179.8, 70.2)]),         # longitudes beyond 180
    load_aoi({"type": "Polygon", "coordinates": [[[179.8, 70.0], [-179.8, 70.0], [-179.8, 70.2], [179.8, 70.2],
                                                  [179.8, 70.0]]]}, antimeridian=True),  # a jump across the line
]


def antimeridian_atl06(out: Path) -> Path:
    """Write, in ``out``, a shortened synthetic ATL06 granule whose beams cross +-180 inside the AOI box."""
    aoi = load_aoi(ANTIMERIDIAN_AOIS[0])
    for spec in plan_granules(aoi, "ATL06", [3], window="aoi", margin_m=3000):
        path = out / spec.name
        write_atl06(spec, path)
        with h5py.File(path) as f:
            lon = np.concatenate([f[f"{b}/land_ice_segments/longitude"][()] for b in TRACK_IDS])
        if (lon > 179.8).any() and (lon < -179.8).any():
            return path
    raise AssertionError("no planned granule crosses the antimeridian")

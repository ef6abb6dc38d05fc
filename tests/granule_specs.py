"""Short test granules: a planned granule cut to a window of +/- half_m around the middle of its AOI crossing."""

from __future__ import annotations

from pathlib import Path

from is2cloud.granules import GranuleSpec, plan_granules

REPO = Path(__file__).resolve().parents[1]


def short_spec(aoi: str, product: str, cycle: int, rgt: int, half_m: float) -> GranuleSpec:
    spec = next(s for s in plan_granules(REPO / "data" / aoi, product, [cycle], window="aoi", margin_m=0)
                if s.rgt == rgt)
    x0, x1 = spec.window
    mid = (x0 + x1) / 2
    return spec.with_window(mid - half_m, mid + half_m, reason="test window")

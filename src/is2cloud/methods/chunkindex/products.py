"""What the chunk index knows of the products it indexes: the indexed group, its coordinates, the
default variables, where the per-granule values are, and how to tell a granule's product from its name."""

from __future__ import annotations

import os
import re
from typing import Any

from is2cloud.methods.schema import ATL06_VARIABLES

GROUPS: dict[str, str] = {"ATL06": "land_ice_segments", "ATL03": "heights"}
COORDINATES: dict[str, tuple[str, str]] = {"ATL06": ("longitude", "latitude"), "ATL03": ("lon_ph", "lat_ph")}
DEFAULT_VARIABLES: tuple[str, ...] = ATL06_VARIABLES
ATL03_VARIABLES: tuple[str, ...] = ("delta_time", "lat_ph", "lon_ph", "h_ph", "signal_conf_ph", "quality_ph")
EPOCH = "/ancillary_data/atlas_sdp_gps_epoch"
ORBIT = {"rgt": "/orbit_info/rgt", "cycle": "/orbit_info/cycle_number"}
_GRANULE_RE = re.compile(r"(ATL\d{2})_\d{14}_\d{8}_(\d{3})_\d{2}")


def _product_of(name: str) -> str | None:
    m = _GRANULE_RE.search(name)
    return m.group(1) if m else None


def _granule_list(granules: Any) -> list[Any]:
    """``granules`` as a list: one granule (a path, URL or ``earthaccess`` record) or an iterable of them."""
    if isinstance(granules, (str, os.PathLike)) or (isinstance(granules, dict) and "umm" in granules):
        return [granules]
    return list(granules)

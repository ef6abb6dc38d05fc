"""Footprints of windows and H3 cells: a window's track simplified (Douglas-Peucker) with the margin
that keeps every point within reach, split where it crosses the antimeridian, and the H3 cells that
overlap it widened by that margin."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import LineString, MultiLineString, box

H3_RESOLUTION = 5            # cells of ~250 km2 (edge ~10 km): a 200 km ATL06 window meets a few dozen
H3_SORT_RESOLUTION = 5
TOLERANCE_DEG = 1e-4         # Douglas-Peucker tolerance of footprints (~11 m of latitude)
MARGIN_EPS_DEG = 1e-9        # added to every margin: floating-point slack between build and query
H3_ALLOWANCE_M = 200.0       # H3 tests overlap with straight edges in lon/lat; widen both sides by this
_M_PER_DEG = 111_320.0


def _pieces_across_antimeridian(lon: np.ndarray, lat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a track where consecutive longitudes jump by more than 180 degrees (it crossed +-180)."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    if lon.size == 0:
        return []
    cuts = np.flatnonzero(np.abs(np.diff(lon)) > 180.0) + 1
    return [(x, y) for x, y in zip(np.split(lon, cuts), np.split(lat, cuts)) if x.size]


def _segment_distances(x: np.ndarray, y: np.ndarray, a: int, b: int) -> np.ndarray:
    """Planar distances of points ``a+1 .. b-1`` from the segment between points ``a`` and ``b``."""
    px, py = x[a + 1:b] - x[a], y[a + 1:b] - y[a]
    dx, dy = x[b] - x[a], y[b] - y[a]
    length2 = dx * dx + dy * dy
    if length2 == 0.0:
        return np.hypot(px, py)
    s = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
    return np.hypot(px - s * dx, py - s * dy)


def douglas_peucker(x: np.ndarray, y: np.ndarray, tolerance: float) -> tuple[np.ndarray, float]:
    """Indices of the vertices Douglas-Peucker keeps, and the largest distance of any point from its
    segment of the simplified line (<= ``tolerance``): every point lies within that of the line."""
    n = len(x)
    if n <= 2:
        return np.arange(n), 0.0
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    worst = 0.0
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        d = _segment_distances(x, y, a, b)
        i = int(np.argmax(d))
        if d[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
        else:
            worst = max(worst, float(d[i]))
    return np.flatnonzero(keep), worst


def window_footprint(lon: np.ndarray, lat: np.ndarray, tolerance: float = TOLERANCE_DEG
                     ) -> tuple[Any, float]:
    """The footprint of a window of points and its margin: a (Multi)LineString through the points,
    split at the antimeridian and simplified (Douglas-Peucker, ``tolerance`` degrees), and the largest
    distance (degrees, planar lon/lat like :meth:`AOI.contains`) from any point to it, plus a small
    epsilon. Every point of the window lies within ``margin`` of the footprint. None for no points."""
    lines: list[LineString] = []
    worst = 0.0
    for x, y in _pieces_across_antimeridian(np.asarray(lon, "f8"), np.asarray(lat, "f8")):
        idx, d = douglas_peucker(x, y, tolerance)
        if len(idx) == 1:
            idx = np.array([idx[0], idx[0]])
        lines.append(LineString(np.column_stack([x[idx], y[idx]])))
        worst = max(worst, d)
    if not lines:
        return None, 0.0
    geom = lines[0] if len(lines) == 1 else MultiLineString(lines)
    return geom, worst + MARGIN_EPS_DEG


def _deg(metres: float, max_abs_lat: float) -> float:
    """A planar lon/lat radius covering ``metres`` in every direction up to latitude ``max_abs_lat``."""
    c = max(math.cos(math.radians(min(abs(max_abs_lat), 89.0))), 1e-3)
    return metres / _M_PER_DEG / c


_SLABS = [box(w, -90.0, w + 90.0, 90.0) for w in (-180.0, -90.0, 0.0, 90.0)]


def _wrapped_parts(geom: Any) -> list[Any]:
    """Polygons of ``geom`` with longitudes in [-180, 180] (parts beyond +-180 shifted by 360 degrees),
    cut into 90-degree slabs so none is taken by H3 for a polygon that crosses the antimeridian."""
    out = []
    for offset, lo, hi in ((0.0, -180.0, 180.0), (-360.0, 180.0, 540.0), (360.0, -540.0, -180.0)):
        piece = shapely.intersection(geom, box(lo, -90.0, hi, 90.0))
        if piece.is_empty:
            continue
        if offset:
            piece = shapely.affinity.translate(piece, xoff=offset)
        for slab in _SLABS:
            part = shapely.intersection(piece, slab)
            for g in getattr(part, "geoms", [part]):
                if g.geom_type == "Polygon" and not g.is_empty and g.area > 0:
                    out.append(g)
    return out


def h3_cover(geom: Any, radius_deg: float, res: int = H3_RESOLUTION, *, max_cells: int = 200_000) -> set[int] | None:
    """H3 cells (as integers) overlapping ``geom`` (lon/lat) widened by ``radius_deg`` plus
    :data:`H3_ALLOWANCE_M`; None if that would be more than ``max_cells`` cells (then callers skip the
    H3 test, which is only an accelerator)."""
    import h3
    import shapely.affinity  # noqa: F401  (used by _wrapped_parts)

    if geom is None or geom.is_empty:
        return set()
    max_lat = max(abs(geom.bounds[1]), abs(geom.bounds[3]))
    radius = radius_deg + _deg(H3_ALLOWANCE_M, max_lat + radius_deg)
    area_km2 = shapely.area(shapely.buffer(shapely.envelope(geom), radius)) * (_M_PER_DEG / 1e3) ** 2
    if area_km2 / h3.average_hexagon_area(res, "km^2") > max_cells:
        return None
    cells: set[int] = set()
    widened = shapely.buffer(geom, radius, quad_segs=4)
    w, s, e, n = widened.bounds
    simple = -180.0 <= w and e <= 180.0 and e - w <= 90.0 and widened.geom_type == "Polygon"
    for poly in ([widened] if simple else _wrapped_parts(widened)):
        shape = h3.geo_to_h3shape(poly.__geo_interface__)
        cells.update(h3.str_to_int(c) for c in h3.h3shape_to_cells_experimental(shape, res, contain="overlap"))
    return cells

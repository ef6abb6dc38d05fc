"""The canonical ATL06 subset schema every method returns (DESIGN section 6).

One row per ATL06 land-ice segment inside the AOI (:meth:`is2cloud.aoi.AOI.contains`: boundary
points are inside), with these columns, in this order and with these dtypes:

| column | dtype | from |
|---|---|---|
| ``time`` | datetime64[ns, UTC] | ``gtx/land_ice_segments/delta_time`` + ``/ancillary_data/atlas_sdp_gps_epoch`` (:func:`atlas_time`) |
| ``latitude``, ``longitude`` | float64 | ``gtx/land_ice_segments/latitude``, ``longitude`` |
| ``h_li``, ``h_li_sigma`` | float32 | ``gtx/land_ice_segments/h_li``, ``h_li_sigma``; the HDF5 fill value becomes NaN |
| ``atl06_quality_summary`` | int8 | ``gtx/land_ice_segments/atl06_quality_summary`` |
| ``track_id`` | str | the beam group: ``gt1l`` .. ``gt3r`` |
| ``rgt`` | int16 | ``/orbit_info/rgt`` |
| ``cycle`` | int8 | ``/orbit_info/cycle_number`` |
| ``segment_id`` | int32 | ``gtx/land_ice_segments/segment_id`` |
| ``granule`` | str | the granule's file name, e.g. ``ATL06_20190312..._006_01.h5`` |
| ``geometry`` | Point, EPSG:4326 | (longitude, latitude) |

Rows are sorted by ``granule, track_id, segment_id`` with a fresh RangeIndex.
Build frames with :func:`canonical_frame` so every method converts the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ATL06_VARIABLES",
    "CANONICAL_COLUMNS",
    "CANONICAL_CRS",
    "CANONICAL_DTYPES",
    "FILL_VALUE_F32",
    "ORBIT_VARIABLES",
    "SORT_KEYS",
    "TRACK_IDS",
    "SchemaError",
    "atlas_time",
    "atlas_time_ns",
    "canonical_frame",
    "check_canonical",
    "empty_frame",
    "sort_canonical",
]

TRACK_IDS: tuple[str, ...] = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
CANONICAL_CRS = "EPSG:4326"
STR = pd.StringDtype(na_value=np.nan)  # pandas' default string dtype ("str")
CANONICAL_DTYPES: dict[str, Any] = {
    "time": pd.DatetimeTZDtype(unit="ns", tz="UTC"),
    "latitude": np.dtype("float64"),
    "longitude": np.dtype("float64"),
    "h_li": np.dtype("float32"),
    "h_li_sigma": np.dtype("float32"),
    "atl06_quality_summary": np.dtype("int8"),
    "track_id": STR,
    "rgt": np.dtype("int16"),
    "cycle": np.dtype("int8"),
    "segment_id": np.dtype("int32"),
    "granule": STR,
}
CANONICAL_COLUMNS: tuple[str, ...] = (*CANONICAL_DTYPES, "geometry")
SORT_KEYS: tuple[str, ...] = ("granule", "track_id", "segment_id")
# Where the canonical columns come from in an ATL06 granule (per beam group / root).
ATL06_VARIABLES: tuple[str, ...] = ("latitude", "longitude", "delta_time", "h_li", "h_li_sigma",
                                    "atl06_quality_summary", "segment_id")
ORBIT_VARIABLES: dict[str, str] = {"rgt": "/orbit_info/rgt", "cycle": "/orbit_info/cycle_number"}
# ATL06 float32 variables use the largest float32 as _FillValue (3.4028235e38).
FILL_VALUE_F32 = float(np.finfo(np.float32).max)
_GPS_EPOCH_UNIX_S = 315_964_800  # 1980-01-06T00:00:00Z in seconds since 1970-01-01
_LEAP_SECONDS_SINCE_2017 = 18  # GPS - UTC since 2017-01-01 (no leap second since; ICESat-2 launched 2018)


class SchemaError(ValueError):
    """A frame that does not follow the canonical schema; the message lists every difference."""


def atlas_time(delta_time: Any, atlas_sdp_gps_epoch: float) -> pd.DatetimeIndex:
    """UTC times from ATL0x ``delta_time`` (seconds since the ATLAS SDP epoch) and ``atlas_sdp_gps_epoch``.

    ``UTC = GPS epoch (1980-01-06) + atlas_sdp_gps_epoch + delta_time - 18 leap seconds``, computed in
    integer nanoseconds from the whole and fractional seconds of each float64 value, so every method
    gets exactly the same timestamps.
    """
    return pd.DatetimeIndex(atlas_time_ns(delta_time, atlas_sdp_gps_epoch)).tz_localize("UTC")


def atlas_time_ns(delta_time: Any, atlas_sdp_gps_epoch: float) -> np.ndarray:
    """:func:`atlas_time` as a plain ``datetime64[ns]`` array (UTC, without a time zone)."""
    dt = np.asarray(delta_time, dtype="f8")
    if not np.all(np.isfinite(dt)):
        raise SchemaError("delta_time has non-finite values")
    whole = np.floor(dt)
    frac_ns = np.round((dt - whole) * 1e9).astype("i8")
    epoch = float(atlas_sdp_gps_epoch)
    epoch_whole = int(np.floor(epoch))
    epoch_frac_ns = round((epoch - epoch_whole) * 1e9)
    base_ns = (_GPS_EPOCH_UNIX_S + epoch_whole - _LEAP_SECONDS_SINCE_2017) * 10**9 + epoch_frac_ns
    ns = whole.astype("i8") * 10**9 + frac_ns + base_ns
    return ns.astype("datetime64[ns]")


def _broadcast(value: Any, n: int, name: str) -> np.ndarray | pd.api.extensions.ExtensionArray:
    if np.ndim(value) == 0:
        return np.repeat(np.asarray([value], dtype=object if isinstance(value, str) else None), n)
    arr = value if isinstance(value, (pd.Series, pd.Index)) else np.asarray(value)
    if len(arr) != n:
        raise SchemaError(f"column {name!r} has {len(arr)} values, expected {n}")
    return arr.to_numpy() if isinstance(arr, (pd.Series, pd.Index)) else arr


def _to_int(values: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise SchemaError(f"column {name!r} must hold whole numbers")
    elif arr.dtype.kind not in "iub":
        raise SchemaError(f"column {name!r} must be numeric, got {arr.dtype}")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise SchemaError(f"column {name!r} has values {arr.min()}..{arr.max()} outside {dtype} range")
    return arr.astype(dtype, copy=False)


def _to_time(values: Any) -> pd.Series:
    """``values`` as UTC times (naive times are taken as UTC)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":  # what the readers make: no parsing, no copies
        t = pd.Series(pd.DatetimeIndex(values, copy=False).tz_localize("UTC"), copy=False)
    else:
        t = pd.to_datetime(pd.Series(values), utc=True)
    return t.astype(CANONICAL_DTYPES["time"])


def canonical_frame(columns: Mapping[str, Any] | pd.DataFrame, *, sort: bool = True,
                    copy: bool = True):  # -> GeoDataFrame
    """Build a canonical GeoDataFrame from its columns (all but ``geometry``, which is made from lon/lat).

    Scalars are broadcast (e.g. one ``granule``, ``track_id``, ``rgt`` or ``cycle`` for a beam).
    Values are converted to the canonical dtypes, refusing lossy integer conversions; float32 fill
    values (3.4028235e38) in ``h_li``/``h_li_sigma`` become NaN. Raises :class:`SchemaError`.
    ``copy=False``: the frame may hold the given arrays themselves, for a caller that gives them up
    (:func:`~is2cloud.methods.baseline.assemble`: a bench-scale subset is not held twice while it is built);
    a given ``dict`` is then emptied as its columns are converted, so each original converted to another
    dtype is let go at once.
    """
    import geopandas as gpd

    if isinstance(columns, pd.DataFrame):
        data = {c: columns[c] for c in columns}
    else:
        data = columns if not copy and type(columns) is dict else dict(columns)
    data.pop("geometry", None)
    wanted = [c for c in CANONICAL_COLUMNS if c != "geometry"]
    missing = [c for c in wanted if c not in data]
    extra = [c for c in data if c not in wanted]
    if missing or extra:
        raise SchemaError(f"canonical columns missing: {missing}; not in the schema: {extra}")
    lengths = {c: len(v) for c, v in data.items() if np.ndim(v) > 0}
    n = max(lengths.values()) if lengths else 0
    out: dict[str, Any] = {}
    for c in wanted:
        v = _broadcast(data.pop(c), n, c)
        dtype = CANONICAL_DTYPES[c]
        if c == "time":
            out[c] = _to_time(v).array if n else pd.array([], dtype=dtype)  # stay datetime64: no object round trip
        elif dtype is STR:
            # few distinct values (granule names, beams) repeated over many rows: convert the distinct ones
            codes, uniques = pd.factorize(np.asarray(v, dtype=object))
            if (codes < 0).any():
                raise SchemaError(f"column {c!r} has missing values")
            out[c] = pd.array(np.asarray(uniques, dtype=object).astype(str), dtype=STR).take(codes)
        elif dtype.kind == "i":
            out[c] = _to_int(v, dtype, c)
        else:
            arr = np.asarray(v)
            if arr.dtype.kind != "f":
                arr = arr.astype("f8")
            if c in ("h_li", "h_li_sigma"):
                fill = arr >= FILL_VALUE_F32
                if fill.any():
                    arr = np.where(fill, np.nan, arr)
            out[c] = arr.astype(dtype, copy=False)
        del v
    # one block per column, without the copy that consolidating them into 2-D blocks makes (a subset of
    # millions of rows would be held twice while the frame is built)
    df = pd.DataFrame({c: pd.Series(out.pop(c), dtype=CANONICAL_DTYPES[c], copy=copy) for c in wanted}, copy=False)
    bad_track = ~df["track_id"].isin(TRACK_IDS)
    if bad_track.any():
        raise SchemaError(f"track_id must be one of {TRACK_IDS}, got {sorted(set(df.loc[bad_track, 'track_id']))}")
    lat, lon = df["latitude"].to_numpy(), df["longitude"].to_numpy()
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise SchemaError("latitude/longitude have non-finite values")
    if n and (np.abs(lat).max() > 90 or np.abs(lon).max() > 180):
        raise SchemaError(f"coordinates outside lon [-180, 180] / lat [-90, 90]: lon {lon.min()}..{lon.max()}, "
                          f"lat {lat.min()}..{lat.max()}")
    # copy=False: df is this function's own frame (GeoDataFrame(df) copies every column by default)
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(lon, lat, crs=CANONICAL_CRS), copy=False)
    return sort_canonical(gdf) if sort else gdf


def empty_frame():  # -> GeoDataFrame
    """A canonical frame with no rows (what a method returns when nothing is inside the AOI)."""
    return canonical_frame({c: np.array([], dtype=d if isinstance(d, np.dtype) else object)
                            for c, d in CANONICAL_DTYPES.items()})


def sort_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Sorted by ``granule, track_id, segment_id`` (stable) with a fresh RangeIndex.

    A frame already in that order (methods that assemble granules, beams and rows in order) is not
    copied: sorting it would hold every column twice for a moment (a bench-scale subset is ~470 MB)."""
    if _in_canonical_order(df):
        return df.reset_index(drop=True)
    return df.sort_values(list(SORT_KEYS), kind="mergesort").reset_index(drop=True)


def _in_canonical_order(df: pd.DataFrame) -> bool:
    """Whether the rows are already sorted by :data:`SORT_KEYS` (False when a key is missing, so the
    caller sorts and places missing keys as ``sort_values`` does)."""
    if len(df) < 2:
        return True
    ordered = np.ones(len(df) - 1, dtype=bool)  # row i+1 is not before row i on the keys compared so far
    tied = np.ones(len(df) - 1, dtype=bool)     # rows i and i+1 are equal on the keys compared so far
    for key in SORT_KEYS:
        col = df[key]
        if col.isna().any():
            return False
        before, same = _adjacent(col)
        ordered &= ~tied | ~before
        tied &= same
        if not ordered.all():
            return False
    return True


def _adjacent(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """For each row after the first: whether it sorts before the row above it, and whether it equals it.
    Arrow strings are compared in Arrow (no codes, no copies: a bench-scale frame's check held 70 MB more
    through factorizing its keys)."""
    if hasattr(col.array, "__arrow_array__"):
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(col.array)
        below, above = arr.slice(1), arr.slice(0, len(arr) - 1)
        return (pc.less(below, above).to_numpy(zero_copy_only=False),
                pc.equal(below, above).to_numpy(zero_copy_only=False))
    values = col.to_numpy()
    return values[1:] < values[:-1], values[1:] == values[:-1]


def check_canonical(df: Any, *, name: str = "frame") -> None:
    """Raise :class:`SchemaError` listing every way ``df`` differs from the canonical schema."""
    import geopandas as gpd
    from pyproj import CRS

    problems: list[str] = []
    if not isinstance(df, gpd.GeoDataFrame):
        raise SchemaError(f"{name} is a {type(df).__name__}, not a GeoDataFrame")
    if tuple(df.columns) != CANONICAL_COLUMNS:
        problems.append(f"columns are {list(df.columns)}, expected {list(CANONICAL_COLUMNS)}")
    for c, dtype in CANONICAL_DTYPES.items():
        if c in df.columns and df[c].dtype != dtype:
            problems.append(f"{c} has dtype {df[c].dtype}, expected {dtype}")
    if "geometry" in df.columns:
        if df.geometry.name != "geometry":
            problems.append(f"the active geometry column is {df.geometry.name!r}, expected 'geometry'")
        if df.crs is None or not CRS.from_user_input(df.crs).equals(CRS.from_user_input(CANONICAL_CRS)):
            problems.append(f"CRS is {df.crs}, expected {CANONICAL_CRS}")
        types = set(df.geometry.geom_type.dropna())
        if types - {"Point"}:
            problems.append(f"geometries must be Points, found {sorted(types)}")
        if {"latitude", "longitude"} <= set(df.columns) and len(df) and not types - {"Point"}:
            same = (np.array_equal(df.geometry.x.to_numpy(), df["longitude"].to_numpy())
                    and np.array_equal(df.geometry.y.to_numpy(), df["latitude"].to_numpy()))
            if not same:
                problems.append("geometry does not equal (longitude, latitude)")
    if "track_id" in df.columns and not df["track_id"].isin(TRACK_IDS).all():
        problems.append(f"track_id has values outside {TRACK_IDS}")
    if set(SORT_KEYS) <= set(df.columns):
        if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
            problems.append("the index is not a fresh RangeIndex")
        keys = df[list(SORT_KEYS)].reset_index(drop=True)
        if not keys.equals(keys.sort_values(list(SORT_KEYS), kind="mergesort").reset_index(drop=True)):
            problems.append(f"rows are not sorted by {', '.join(SORT_KEYS)}")
        if keys.duplicated().any():
            problems.append(f"{int(keys.duplicated().sum())} rows repeat a ({', '.join(SORT_KEYS)}) key")
    if problems:
        raise SchemaError(f"{name} does not follow the canonical schema: " + "; ".join(problems))

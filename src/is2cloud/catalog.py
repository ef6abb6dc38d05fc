"""Granule search: the local catalog of the synthetic archive, or NASA's CMR through earthaccess.

>>> granules = find_granules("data/greenland_aoi.geojson", "ATL06", temporal=("2019-01-01", "2020-12-31"))  # doctest: +SKIP
>>> granules[0].data_links(access="direct")      # ['s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/...h5']  # doctest: +SKIP

Both modes return ``earthaccess.DataGranule`` objects, sorted by granule name. In ``local`` mode the
records come from ``catalog/<PRODUCT>_<VVV>.jsonl`` of a generated archive (default: the preset named by
``settings.scale``, generated on first use); a granule matches when its footprint polygon intersects the
AOI and its time range overlaps ``temporal``. In ``earthdata`` mode ``earthaccess.search_data`` is asked
the same question (it needs a prior ``earthaccess.login()`` only for downloading, not for searching).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from is2cloud.aoi import AOI, load_aoi

PRODUCTS: tuple[str, ...] = ("ATL03", "ATL06")
LOCAL_VERSIONS: tuple[str, ...] = ("006",)

Temporal = tuple[Any, Any] | list[Any] | str | None


class NoGranulesError(ValueError):
    """The search was valid but found nothing; the message says what was searched."""


# -- validation ----------------------------------------------------------------------------------------


def normalize_product(product: Any) -> str:
    text = str(product).strip().upper()
    if text not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; this book uses {' or '.join(PRODUCTS)}")
    return text


def normalize_version(version: Any, *, local: bool) -> str:
    text = str(version).strip().lstrip("vV")
    if not text.isdigit() or len(text) > 3:
        raise ValueError(f"version {version!r} is not a release number like '006'")
    text = text.zfill(3)
    if local and text not in LOCAL_VERSIONS:
        raise ValueError(f"version {text} is not in the local synthetic archive, which holds release "
                         f"{', '.join(LOCAL_VERSIONS)} only (real v007 ATL03 exists on NASA's cloud: use "
                         "IS2CLOUD_MODE=earthdata)")
    return text


def _parse_time(value: Any, *, end: bool) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time.max if end else time.min, tzinfo=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                d = date.fromisoformat(text)
                return datetime.combine(d, time.max if end else time.min, tzinfo=timezone.utc)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"temporal bound {value!r} is not a date or time (use ISO 8601, e.g. '2019-03-01' "
                             "or '2019-03-01T12:00:00Z')") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError(f"temporal bound {value!r} is not a date, datetime or ISO string")


def parse_temporal(temporal: Temporal) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` as aware UTC datetimes; a date-only end means the end of that day (as in CMR)."""
    if temporal is None:
        return None, None
    if isinstance(temporal, str):
        parts = [p for p in re.split(r"\s*[,/]\s*", temporal.strip())]
        if len(parts) != 2:
            raise ValueError(f"temporal {temporal!r} must be two times, 'start,end' or 'start/end'")
        temporal = parts
    if not isinstance(temporal, (tuple, list)) or len(temporal) != 2:
        raise ValueError(f"temporal must be a (start, end) pair, not {temporal!r}")
    start = _parse_time(temporal[0], end=False)
    end = _parse_time(temporal[1], end=True)
    if start is not None and end is not None and start > end:
        raise ValueError(f"temporal range is reversed: start {start.isoformat()} is after end {end.isoformat()}")
    return start, end


def _fmt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "open"


# -- search ------------------------------------------------------------------------------------------------


def find_granules(aoi: Any, product: str, version: str = "006", temporal: Temporal = None, *,
                  archive: Any = None, count: int | None = None) -> list:
    """Granules of ``product`` (ATL03 or ATL06) whose footprint intersects ``aoi`` within ``temporal``.

    ``aoi``: anything :func:`is2cloud.aoi.load_aoi` accepts. ``temporal``: ``(start, end)`` (dates,
    datetimes or ISO strings; either may be None) or ``"start,end"``. ``archive`` (local mode): an
    :class:`~is2cloud.granules.archive.Archive` or its directory; default: the ``settings.scale`` preset.
    ``count`` keeps the first ``count`` granules. Returns ``earthaccess.DataGranule`` objects sorted by
    name; raises :class:`NoGranulesError` when nothing matches and ValueError on bad input.
    """
    from is2cloud.settings import get_settings

    settings = get_settings()
    local = settings.mode == "local"
    product = normalize_product(product)
    version = normalize_version(version, local=local)
    start, end = parse_temporal(temporal)
    area = load_aoi(aoi)
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be a positive integer, not {count!r}")
    if local:
        granules, where = _search_local(area, product, version, start, end, archive, settings)
    else:
        granules, where = _search_earthdata(area, product, version, start, end, count)
    granules = sorted(granules, key=lambda g: g["umm"]["GranuleUR"])
    if not granules:
        raise NoGranulesError(_no_granules_message(area, product, version, start, end, where))
    return granules[:count] if count is not None else granules


def _search_local(area: AOI, product: str, version: str, start: datetime | None, end: datetime | None,
                  archive: Any, settings: Any) -> tuple[list, str]:
    import earthaccess

    arch = _local_archive(archive, settings)
    records = arch.umm_records(product, version)
    shapes = _aoi_shapes(area)
    out = []
    in_space = 0
    for rec in records:
        if not any(fp.intersects(s) for fp in _footprints(rec) for s in shapes):
            continue
        in_space += 1
        if _overlaps_time(rec, start, end):
            out.append(earthaccess.DataGranule(rec, cloud_hosted=True))
    times = [r["umm"]["TemporalExtent"]["RangeDateTime"] for r in records]
    span = (f"{min(t['BeginningDateTime'] for t in times)} .. {max(t['EndingDateTime'] for t in times)}"
            if times else "nothing")
    where = (f"the local synthetic archive {arch.preset!r} ({len(records)} {product} granules covering {span}, "
             f"at {arch.root})")
    if in_space:
        where += f"; {in_space} of them cross the AOI but none in the time range"
    return out, where


def _local_archive(archive: Any, settings: Any) -> Any:
    from is2cloud.granules.archive import Archive, load_archive, publish_archive

    if archive is None:
        return publish_archive(settings.scale, cache_dir=settings.cache_dir)
    if isinstance(archive, Archive):
        return archive
    if isinstance(archive, (str, Path)):
        return load_archive(archive)
    if hasattr(archive, "root"):
        return load_archive(archive.root)
    raise ValueError(f"archive must be an Archive or a directory, not {type(archive).__name__}")


def _aoi_shapes(area: AOI) -> list:
    """The AOI parts, also shifted by +/-360 degrees so footprints near the antimeridian still meet them."""
    import shapely.affinity

    parts = area.parts
    return parts + [shapely.affinity.translate(p, xoff=dx) for p in parts for dx in (-360.0, 360.0)]


def _footprints(record: dict[str, Any]) -> list:
    from shapely.geometry import LineString, Polygon

    geometry = record["umm"].get("SpatialExtent", {}).get("HorizontalSpatialDomain", {}).get("Geometry", {})
    shapes = []
    for gp in geometry.get("GPolygons", []):
        pts = [(p["Longitude"], p["Latitude"]) for p in gp["Boundary"]["Points"]]
        poly = Polygon(pts)
        shapes.append(poly if poly.is_valid else poly.buffer(0))
    for line in geometry.get("Lines", []):
        shapes.append(LineString([(p["Longitude"], p["Latitude"]) for p in line["Points"]]))
    return shapes


def _overlaps_time(record: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    rng = record["umm"]["TemporalExtent"]["RangeDateTime"]
    begin = datetime.fromisoformat(rng["BeginningDateTime"].replace("Z", "+00:00"))
    finish = datetime.fromisoformat(rng["EndingDateTime"].replace("Z", "+00:00"))
    return (start is None or finish >= start) and (end is None or begin <= end)


def _search_earthdata(area: AOI, product: str, version: str, start: datetime | None, end: datetime | None,
                      count: int | None) -> tuple[list, str]:
    import earthaccess

    kwargs: dict[str, Any] = {"short_name": product, "version": version, "cloud_hosted": True}
    if start is not None or end is not None:
        kwargs["temporal"] = (_fmt(start) if start else None, _fmt(end) if end else None)
    if count is not None:
        kwargs["count"] = count
    found: dict[str, Any] = {}
    rings = area.polygons_lonlat()
    for ring in rings:
        if len(rings) == 1 and len(ring) <= 200:
            query = {"polygon": ring}
        else:  # antimeridian parts or very detailed outlines: ask by bounding box
            xs, ys = [p[0] for p in ring], [p[1] for p in ring]
            query = {"bounding_box": (min(xs), min(ys), max(xs), max(ys))}
        for g in earthaccess.search_data(**kwargs, **query):
            found.setdefault(g["umm"]["GranuleUR"], g)
    return list(found.values()), "NASA CMR (earthaccess.search_data, cloud-hosted collections)"


def _no_granules_message(area: AOI, product: str, version: str, start: datetime | None, end: datetime | None,
                         where: str) -> str:
    w, s, e, n = area.bounds
    lon, lat = area.centre
    hint = ""
    if "cross the AOI" not in where and abs(lon) <= 90 and abs(lat) <= 180:
        hint = (f" (Read as lat/lon the AOI would sit at lon {lat:.4f}, lat {lon:.4f}: if that is where you meant, "
                "swap the coordinates.)")
    return (f"no {product} v{version} granules found for AOI {area.name!r} (bounds W {w:.4f}, S {s:.4f}, "
            f"E {e:.4f}, N {n:.4f}; centre lon {lon:.4f}, lat {lat:.4f}) between {_fmt(start)} and {_fmt(end)} in "
            f"{where}. Check that the AOI is in longitude/latitude order (x = longitude, y = latitude) and that "
            f"the time range covers the data.{hint}")


__all__ = ["LOCAL_VERSIONS", "NoGranulesError", "PRODUCTS", "find_granules", "normalize_product",
           "normalize_version", "parse_temporal"]

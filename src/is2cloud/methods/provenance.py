"""What a prepared artefact of the virtual methods records about its granules, and the checks a subset
makes against it (notebooks 04 and 05).

At prepare time, per granule: its name, ``s3://`` URL, size and ETag (one HEAD; also compared with the
catalog record's size and MD5, when the granule came from a search) and, for a catalog record, its
footprint (WKT), so a subset can tell an AOI outside everything the artefact covers. At subset time:
one concurrent HEAD per granule (:func:`is2cloud.methods.ranges.check_objects`) so that an artefact
older than a granule it covers is an error naming the granule, never rows from another file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from is2cloud.aoi import AOI
from is2cloud.methods.baseline import GranuleSource, granule_source
from is2cloud.methods.ranges import (
    ObjectChangedError,
    ObjectId,
    ObjectMissingError,
    check_objects,
    head_object,
    normalize_etag,
    split_url,
)

__all__ = ["GranuleRecord", "check_coverage", "check_fresh", "record_granules", "sources"]


@dataclass(frozen=True)
class GranuleRecord:
    """One granule as an artefact records it (JSON-able): name, URL, size, ETag, footprint (WKT or None)."""

    name: str
    url: str
    size: int
    etag: str
    footprint: str | None = None

    @property
    def obj(self) -> ObjectId:
        return ObjectId(*split_url(self.url), self.size, self.etag)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GranuleRecord:
        return GranuleRecord(str(d["name"]), str(d["url"]), int(d["size"]), str(d["etag"]), d.get("footprint"))


def sources(granules: Any, method: str) -> tuple[list[Any], list[GranuleSource]]:
    """The granules as a list and their :class:`GranuleSource` (``s3://`` objects only: a virtual
    reference points into an object in S3); raises ``ValueError`` naming a granule given as a local path."""
    import os

    items = [granules] if isinstance(granules, (str, os.PathLike)) or (isinstance(granules, dict)
                                                                        and "umm" in granules) else list(granules)
    srcs = [granule_source(g) for g in items]
    local = [s.name for s in srcs if not s.url.startswith("s3://")]
    if local:
        raise ValueError(f"{method} references objects in S3; {', '.join(local[:5])} "
                         f"{'is' if len(local) == 1 else 'are'} not s3:// URLs (upload them first)")
    return items, srcs


def _footprint_wkt(granule: Any) -> str | None:
    if not (isinstance(granule, dict) and "umm" in granule):
        return None
    from shapely import union_all

    from is2cloud.catalog import _footprints

    shapes = _footprints(granule)
    return union_all(shapes).wkt if shapes else None


def record_granules(items: Sequence[Any], srcs: Sequence[GranuleSource], credentials: Any,
                    error: Callable[[str], Exception]) -> list[GranuleRecord]:
    """HEAD every granule object and record it; ``error(message)`` builds the exception raised (naming
    the granule) when an object is missing or disagrees with its catalog record (size or MD5)."""
    out = []
    for item, src in zip(items, srcs):
        bucket, key = split_url(src.url)
        try:
            obj = head_object(credentials, bucket, key)
        except ObjectMissingError as exc:
            raise error(str(exc)) from None
        if src.size is not None and obj.size != src.size:
            raise error(f"{src.name}: the object {src.url} has {obj.size} bytes but the catalog record says "
                        f"{src.size}: it is not the published granule")
        if src.md5 and "-" not in obj.etag and normalize_etag(src.md5) != obj.etag:
            raise error(f"{src.name}: the object {src.url} has ETag {obj.etag} but the catalog record's MD5 is "
                        f"{src.md5}: it is not the published granule")
        out.append(GranuleRecord(src.name, src.url, obj.size, obj.etag, _footprint_wkt(item)))
    return out


def check_fresh(credentials: Any, records: Iterable[GranuleRecord], what: str,
                error: Callable[[str], Exception]) -> None:
    """HEAD every recorded object concurrently; ``error`` (naming the granule) when one changed or is gone."""
    try:
        check_objects(credentials, [r.obj for r in records])
    except ObjectChangedError as exc:
        raise error(f"stale {what}: {exc}; prepare it again") from None
    except ObjectMissingError as exc:
        raise error(f"stale {what}: {exc} (the granule is gone); prepare it again") from None


def check_coverage(area: AOI, records: Sequence[GranuleRecord], what: str,
                   error: Callable[[str], Exception]) -> list[GranuleRecord]:
    """The records whose footprint meets the AOI, or that have none (granules given as URLs: always
    read); ``error`` when every granule has a footprint and the AOI meets none (outside the artefact)."""
    import shapely

    from is2cloud.catalog import _aoi_shapes

    shapes = _aoi_shapes(area)
    meets = [r for r in records
             if r.footprint is None or any(shapely.from_wkt(r.footprint).intersects(s) for s in shapes)]
    if meets or not records:
        return meets
    w, s, e, n = area.bounds
    raise error(f"the AOI {area.name!r} (W {w:.4f}, S {s:.4f}, E {e:.4f}, N {n:.4f}) lies outside the {what}: "
                f"it meets none of the footprints of its {len(records)} granules")

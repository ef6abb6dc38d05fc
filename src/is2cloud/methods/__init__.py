"""Subsetting methods: one module per method, all with one protocol (:mod:`is2cloud.methods.protocol`):
``prepare(granules, ...)`` for the one-time artefact, ``subset(prepared_or_granules, aoi, ...)``.

Every method returns the canonical schema (:mod:`is2cloud.methods.schema`) and the same rows for the
same granules and AOI (checked with :func:`is2cloud.methods.identity.assert_same_rows`).
:func:`available` lists the methods in book order; the bench and the comparison chapter iterate it.
"""

import importlib
from types import ModuleType

from is2cloud.methods.identity import assert_same_rows, diff_rows
from is2cloud.methods.schema import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    SORT_KEYS,
    TRACK_IDS,
    SchemaError,
    atlas_time,
    canonical_frame,
    check_canonical,
    empty_frame,
    sort_canonical,
)

# In book order (the chapter each is taught in); a method is listed once its module exists.
METHODS: tuple[str, ...] = ("baseline", "virtual", "kerchunk", "repacked", "chunkindex")


def available() -> list[ModuleType]:
    """The method modules, in book order."""
    return [get(name) for name in METHODS]


def get(name: str) -> ModuleType:
    """The method module called ``name`` (its ``NAME``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(f"is2cloud.methods.{name}")


__all__ = [
    "METHODS",
    "available",
    "get",
    "CANONICAL_COLUMNS",
    "CANONICAL_DTYPES",
    "SORT_KEYS",
    "TRACK_IDS",
    "SchemaError",
    "assert_same_rows",
    "atlas_time",
    "canonical_frame",
    "check_canonical",
    "diff_rows",
    "empty_frame",
    "sort_canonical",
]

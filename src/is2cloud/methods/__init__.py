"""Subsetting methods: one module per method, each ``subset(granules, aoi, variables, ...) -> GeoDataFrame``.

Every method returns the canonical schema (:mod:`is2cloud.methods.schema`) and the same rows for the
same granules and AOI (checked with :func:`is2cloud.methods.identity.assert_same_rows`).
"""

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

__all__ = [
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

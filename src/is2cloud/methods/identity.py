"""Cross-method identity: two methods must return the same rows for the same granules and AOI.

>>> assert_same_rows(baseline.subset(g, aoi), virtual.subset(g, aoi), names=("baseline", "virtual"))  # doctest: +SKIP

Both frames are put in canonical order (:func:`~is2cloud.methods.schema.sort_canonical`), then
compared exactly: the same columns and dtypes, the same ``(granule, track_id, segment_id)`` keys,
and bit-identical values (NaN equals NaN; geometries by coordinates). On failure the
AssertionError says which keys are missing on either side and which columns differ, with examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from is2cloud.methods.schema import SORT_KEYS, sort_canonical

__all__ = ["RowDiff", "assert_same_rows", "diff_rows"]


@dataclass
class RowDiff:
    """How two canonical frames differ (empty when they are identical)."""

    names: tuple[str, str]
    schema: list[str] = field(default_factory=list)
    only_in_a: pd.DataFrame | None = None
    only_in_b: pd.DataFrame | None = None
    duplicated: dict[str, int] = field(default_factory=dict)
    columns: dict[str, pd.DataFrame] = field(default_factory=dict)  # column -> examples (keys, a, b)
    counts: dict[str, int] = field(default_factory=dict)  # column -> number of differing rows

    @property
    def identical(self) -> bool:
        return not (self.schema or self.duplicated or self.counts or _n(self.only_in_a) or _n(self.only_in_b))

    def report(self, max_examples: int = 5) -> str:
        a, b = self.names
        lines: list[str] = []
        lines += [f"schema: {p}" for p in self.schema]
        for side, n in self.duplicated.items():
            lines.append(f"{side} repeats {n} ({', '.join(SORT_KEYS)}) keys")
        for side, rows in ((a, self.only_in_a), (b, self.only_in_b)):
            if _n(rows):
                lines.append(f"{_n(rows)} rows only in {side}, e.g.:\n{_indent(rows.head(max_examples))}")
        for col, n in self.counts.items():
            lines.append(f"column {col!r} differs in {n} rows, e.g.:\n{_indent(self.columns[col].head(max_examples))}")
        return "\n".join(lines) if lines else "identical"


def _n(df: pd.DataFrame | None) -> int:
    return 0 if df is None else len(df)


def _indent(df: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 17):
        return "\n".join("    " + line for line in df.to_string(index=False).splitlines())


def _values_equal(x: pd.Series, y: pd.Series) -> np.ndarray:
    if hasattr(x, "geom_type") or (len(x) and hasattr(x.iloc[0], "geom_type")):
        return _geoms_equal(x, y)
    xa, ya = x.to_numpy(), y.to_numpy()
    if xa.dtype.kind == "f" and ya.dtype.kind == "f":
        return (xa == ya) | (np.isnan(xa) & np.isnan(ya))
    eq = x.reset_index(drop=True).eq(y.reset_index(drop=True)).to_numpy(dtype=bool, na_value=False)
    both_na = x.isna().to_numpy() & y.isna().to_numpy()
    return eq | both_na


def _geoms_equal(x: pd.Series, y: pd.Series) -> np.ndarray:
    import shapely

    gx, gy = np.asarray(x.values, dtype=object), np.asarray(y.values, dtype=object)
    return shapely.equals_identical(gx, gy) | (shapely.is_missing(gx) & shapely.is_missing(gy))


def diff_rows(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("a", "b")) -> RowDiff:
    """Compare two canonical frames row by row (after the canonical sort); see :class:`RowDiff`."""
    an, bn = names
    diff = RowDiff(names=names)
    if list(a.columns) != list(b.columns):
        diff.schema.append(f"columns differ: {an} has {list(a.columns)}, {bn} has {list(b.columns)}")
    common = [c for c in a.columns if c in b.columns]
    for c in common:
        if str(a[c].dtype) != str(b[c].dtype):
            diff.schema.append(f"{c}: {an} has dtype {a[c].dtype}, {bn} has {b[c].dtype}")
    crs_a, crs_b = getattr(a, "crs", None), getattr(b, "crs", None)
    if crs_a != crs_b:
        diff.schema.append(f"CRS differs: {an} {crs_a}, {bn} {crs_b}")
    keys = list(SORT_KEYS)
    if not set(keys) <= set(common):
        diff.schema.append(f"cannot match rows without the key columns {keys}")
        return diff
    a, b = sort_canonical(a), sort_canonical(b)
    for side, df in ((an, a), (bn, b)):
        dup = int(df.duplicated(keys).sum())
        if dup:
            diff.duplicated[side] = dup
    ka = pd.DataFrame({k: a[k].astype(object) for k in keys}).assign(_ia=np.arange(len(a)))
    kb = pd.DataFrame({k: b[k].astype(object) for k in keys}).assign(_ib=np.arange(len(b)))
    merged = ka.merge(kb, on=keys, how="outer", indicator=True)
    diff.only_in_a = merged.loc[merged["_merge"] == "left_only", keys].reset_index(drop=True)
    diff.only_in_b = merged.loc[merged["_merge"] == "right_only", keys].reset_index(drop=True)
    both = merged[merged["_merge"] == "both"]
    ia, ib = both["_ia"].to_numpy(dtype=int), both["_ib"].to_numpy(dtype=int)
    for c in common:
        if c in keys:
            continue
        xa, xb = a[c].iloc[ia].reset_index(drop=True), b[c].iloc[ib].reset_index(drop=True)
        same = _values_equal(xa, xb)
        if not same.all():
            bad = ~same
            diff.counts[c] = int(bad.sum())
            ex = both.loc[:, keys].reset_index(drop=True)[bad].copy()
            ex[an] = [str(v) if hasattr(v, "geom_type") else v for v in xa[bad]]
            ex[bn] = [str(v) if hasattr(v, "geom_type") else v for v in xb[bad]]
            diff.columns[c] = ex.reset_index(drop=True)
    return diff


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("a", "b"),
                     max_examples: int = 5) -> None:
    """Assert that two methods returned identical rows (canonical order, exact values)."""
    diff = diff_rows(a, b, names=names)
    if not diff.identical:
        an, bn = names
        raise AssertionError(f"{an} ({len(a)} rows) and {bn} ({len(b)} rows) differ:\n"
                             + diff.report(max_examples))


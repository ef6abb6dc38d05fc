"""The method protocol: what every subsetting method of the book looks like, in one place.

A method is a module ``is2cloud.methods.<name>`` (listed in book order by
:func:`is2cloud.methods.available`) with

* ``NAME`` (``"baseline"``, ``"chunkindex"``, ...), ``TITLE`` (for tables), ``DESCRIPTION`` (one line) and
  ``CHAPTER`` (the notebook that teaches it);
* ``prepare(granules, *, out=None, credentials=None, out_credentials=None, client=None, progress=None,
  **options)``: the one-time step (a virtual store, reference files, repacked copies, an index),
  written to ``out`` (default: a place in the output bucket); returns a small :class:`Prepared` handle,
  or None when there is nothing to prepare (the baseline);
* ``subset(prepared_or_granules, aoi, variables=None, *, credentials=None, out_credentials=None,
  client=None, progress=None, **options)``: the rows inside the AOI as a GeoDataFrame in the canonical
  schema (:mod:`is2cloud.methods.schema`), the same rows for every method. Its first argument is what
  ``prepare`` returned (or the artefact's location), or the granules when ``prepare`` returned None;
* ``benchmark(scale, cloud, ...)``: its suite of ``make bench`` (``is2cloud bench --suite <NAME>``;
  docs/CONTRACTS.md).

The same two credential keywords everywhere: ``credentials`` read the granules (NASA's, in earthdata
mode), ``out_credentials`` write and read back the prepared artefact, which lives in your bucket.
Defaults: ``get_credentials("read")`` and ``get_credentials("write")``. ``progress=None`` shows progress
only when someone watches (:mod:`is2cloud.progress`).

>>> from is2cloud import methods                                             # doctest: +SKIP
>>> for method in methods.available():                                       # doctest: +SKIP
...     prepared = method.prepare(granules)
...     gdf = method.subset(prepared if prepared is not None else granules, aoi)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = ["COMMON_KEYWORDS", "Method", "Prepared", "check_method"]

COMMON_KEYWORDS: tuple[str, ...] = ("credentials", "out_credentials", "client", "progress")


@runtime_checkable
class Prepared(Protocol):
    """The handle of a prepared artefact: which method made it, where it is, what it covers, its size,
    and what preparing it cost (``stats``: ``gets``, ``bytes_read``, ``seconds`` and per-method details)."""

    method: str
    location: str | None
    stats: dict[str, Any]

    @property
    def granules(self) -> Sequence[str]: ...

    @property
    def nbytes(self) -> int: ...


class Method(Protocol):
    """The module-level shape of a method (a module satisfies it structurally)."""

    NAME: str
    TITLE: str
    DESCRIPTION: str
    CHAPTER: str

    def prepare(self, granules: Any, *, out: Any = None, credentials: Any = None, out_credentials: Any = None,
                client: Any = None, progress: bool | None = None, **options: Any) -> Prepared | None: ...

    def subset(self, prepared_or_granules: Any, aoi: Any, variables: Any = None, *, credentials: Any = None,
               out_credentials: Any = None, client: Any = None, progress: bool | None = None,
               **options: Any) -> Any: ...


def check_method(module: ModuleType) -> list[str]:
    """What ``module`` lacks of the protocol (an empty list when it follows it)."""
    problems = [f"no {attr}" for attr in ("NAME", "TITLE", "DESCRIPTION", "CHAPTER")
                if not isinstance(getattr(module, attr, None), str)]
    if not callable(getattr(module, "benchmark", None)):
        problems.append("no benchmark() for make bench")
    for fn_name, first in (("prepare", ("granules",)), ("subset", None)):
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            problems.append(f"no {fn_name}()")
            continue
        params = inspect.signature(fn).parameters
        positional = [p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if fn_name == "prepare":
            if positional[:1] != list(first or ()):
                problems.append(f"prepare's first argument is {positional[:1]}, not ['granules']")
            if "out" not in params:
                problems.append("prepare takes no out=")
        else:
            if len(positional) < 3 or positional[1:3] != ["aoi", "variables"]:
                problems.append(f"subset's arguments are {positional[:3]}, not [<prepared or granules>, aoi, variables]")
            elif params["variables"].default is not None:
                problems.append("subset's variables do not default to None")
        for kw in COMMON_KEYWORDS:
            if kw not in params or params[kw].kind != inspect.Parameter.KEYWORD_ONLY:
                problems.append(f"{fn_name} takes no keyword-only {kw}=")
    return problems

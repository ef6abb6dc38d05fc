"""What is inside a kerchunk reference set, as a table: one row per key, with its kind."""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["reference_table"]

_META = (".zgroup", ".zarray", ".zattrs")


def _kind(key: str, value: Any) -> str:
    if key.rsplit("/", 1)[-1] in _META:
        return "metadata"
    return "chunk" if isinstance(value, list) else "inlined"


def _inline_bytes(value: Any) -> int:
    text = value if isinstance(value, str) else bytes(value).decode("latin-1")
    return len(base64.b64decode(text[7:])) if text.startswith("base64:") else len(text.encode("latin-1"))


def reference_table(refs: dict[str, Any]):  # -> pandas.DataFrame
    """The keys of a reference set (``{"version": 1, "refs": {...}}`` or its ``refs``), one row each:
    ``key``, ``kind`` (``metadata``: Zarr JSON; ``chunk``: ``[url, offset, length]`` in the HDF5 object;
    ``inlined``: the chunk's bytes themselves), and for a chunk its ``url``, ``offset`` and ``length``,
    for an inlined value its ``length`` in bytes."""
    import pandas as pd

    rows = []
    for key, value in refs.get("refs", refs).items():
        kind = _kind(key, value)
        row = {"key": key, "kind": kind, "url": None, "offset": None, "length": None}
        if kind == "chunk":
            url, *span = value
            row.update(url=url, offset=span[0] if span else None, length=span[1] if span else None)
        elif kind == "inlined":
            row["length"] = _inline_bytes(value)
        rows.append(row)
    return pd.DataFrame(rows).astype({"offset": "Int64", "length": "Int64"})

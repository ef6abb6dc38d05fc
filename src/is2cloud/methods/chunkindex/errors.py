"""The errors of the chunk index: every one names the granule, variable or index and the problem."""

from __future__ import annotations

__all__ = ["ChunkIndexError", "OutsideIndexError", "StaleIndexError", "WrongProductError"]


class ChunkIndexError(RuntimeError):
    """The chunk index cannot answer: the message names the granule, variable or index and the problem."""


class StaleIndexError(ChunkIndexError):
    """A granule object no longer matches the index (changed, missing, or not in the index)."""


class WrongProductError(ChunkIndexError):
    """The index was built for another product (or group) than the one asked for."""


class OutsideIndexError(ChunkIndexError):
    """The AOI lies outside everything the index covers."""

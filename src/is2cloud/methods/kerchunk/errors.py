"""The errors of the kerchunk reference store: every one names the granule, variable or store and the problem."""

from __future__ import annotations

from is2cloud.methods.lazyread import CompactVariableError

__all__ = ["CompactVariableError", "MissingReferencesError", "OutsideReferencesError", "ReferenceError_",
           "StaleReferencesError"]


class ReferenceError_(RuntimeError):  # noqa: N801 (ReferenceError is a builtin)
    """The references cannot be made or read: the message names the granule or store and the problem."""


class MissingReferencesError(ReferenceError_):
    """A granule's reference file (or the store's manifest) is not there."""


class StaleReferencesError(ReferenceError_):
    """A granule object changed (or is gone) since its references were made."""


class OutsideReferencesError(ReferenceError_):
    """The AOI lies outside every granule footprint the references recorded."""

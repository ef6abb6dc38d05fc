"""The errors of the virtual store: every one names the granule, variable or store and the problem."""

from __future__ import annotations

from is2cloud.methods.lazyread import CompactVariableError

__all__ = ["CompactVariableError", "OutsideStoreError", "SidecarError", "StaleStoreError", "VirtualStoreError"]


class VirtualStoreError(RuntimeError):
    """The virtual store cannot be prepared or read: the message names the granule or store and the problem."""


class SidecarError(VirtualStoreError):
    """A DMR++ sidecar does not match its granule (another file name, byte ranges beyond the object, older
    than the granule), or ``parser="dmrpp"`` found none it can parse."""


class StaleStoreError(VirtualStoreError):
    """A granule object changed (or is gone) since the store was prepared."""


class OutsideStoreError(VirtualStoreError):
    """The AOI lies outside every granule footprint the store recorded."""

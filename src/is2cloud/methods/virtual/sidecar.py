"""Parsing one granule into the groups the virtual store keeps: from its DMR++ sidecar when there is a
parseable one (no byte of the HDF5 object read), else from the HDF5 object with VirtualiZarr's
``HDFParser`` (earthaccess falls back the same way).

What is kept of a granule (paths as in the HDF5 file): each beam's ``gtx/land_ice_segments`` arrays,
``orbit_info/{rgt,cycle_number}`` and ``ancillary_data/atlas_sdp_gps_epoch``. Separate groups, so that
xarray never sees two phony dimensions of one name with different sizes.

The sidecar (``<granule URL>.dmrpp``, NSIDC's convention) is fetched once and parsed once
(``xml.etree``); VirtualiZarr's ``DMRParser`` (the parser behind ``DMRPPParser``) then builds each group
from that tree: ``DMRPPParser`` would fetch the sidecar again for every group. A sidecar VirtualiZarr
cannot parse (NSIDC's flattened v006 sidecars: ``type="null"`` attributes raise ``KeyError``) counts
as missing. A parseable sidecar must match its granule: its ``name`` is the granule's file name, every
byte range lies inside the object, and it is not older than the object (a granule replaced after its
sidecar was made) -- otherwise :class:`SidecarError`.

COMPACT datasets (bytes in the object header): VirtualiZarr gives them no references (``HDFParser``: an
empty manifest that reads as zeros; ``DMRPPParser`` skips them). The granule scalars are materialised
(HDF5 route: read with h5py from the blocks already fetched; DMR++ route: decoded from the sidecar's
``dmrpp:compact`` base64, or kept as references when not COMPACT); any other COMPACT array is left out
and listed in its group's ``is2cloud:compact`` attribute, so reading it is an error.
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.etree import ElementTree as ET

import numpy as np

from is2cloud.dmrpp import sidecar_url
from is2cloud.methods.baseline import GROUP
from is2cloud.methods.lazyread import SCALARS
from is2cloud.methods.ranges import BlockFile, ObjectId
from is2cloud.methods.schema import TRACK_IDS
from is2cloud.methods.virtual.errors import SidecarError, VirtualStoreError

__all__ = ["EAGER_BYTES", "ParsedGranule", "Parser", "parse_granule"]

Parser = Literal["auto", "dmrpp", "hdf"]
EAGER_BYTES = 512 * 2**20  # the HDF5 route fetches objects up to this size whole (concurrent 8 MiB blocks)
BLOCK_BYTES = 8 * 2**20
_NS = {"dap": "http://xml.opendap.org/ns/DAP/4.0#", "dmrpp": "http://xml.opendap.org/dap/dmrpp/1.0.0#"}
_PARSE_ERRORS = (ET.ParseError, KeyError, ValueError, TypeError, AttributeError, IndexError, UnboundLocalError)


@dataclass
class ParsedGranule:
    """One granule ready to be written: per group path its ManifestGroup (arrays kept), the COMPACT
    arrays left out per group, materialised scalars, which parser was used and what it read."""

    groups: dict[str, Any]
    compact: dict[str, list[str]] = field(default_factory=dict)
    scalars: dict[str, dict[str, Any]] = field(default_factory=dict)
    parser: str = "hdf"
    gets: int = 0
    bytes_read: int = 0
    warnings: list[str] = field(default_factory=list)


def _wanted(path: str) -> bool:
    return path in {f"{b}/{GROUP}" for b in TRACK_IDS} | {p.rsplit("/", 1)[0] for p in SCALARS.values()}


def _keep(path: str, names: list[str]) -> list[str]:
    """The arrays kept of a group: all of a beam's land_ice_segments, only the scalars elsewhere."""
    if path.endswith(GROUP):
        return names
    scalars = {p.rsplit("/", 1)[1] for p in SCALARS.values() if p.rsplit("/", 1)[0] == path}
    return [n for n in names if n in scalars]


def _scalar(value: Any) -> dict[str, Any]:
    arr = np.asarray(value).ravel()
    return {"value": arr[0].item(), "dtype": arr.dtype.str}


# -- the DMR++ route ---------------------------------------------------------------------------------


def _fetch_sidecar(obj: ObjectId, store: Any) -> tuple[bytes, dt.datetime | None] | None:
    import obstore

    try:
        result = obstore.get(store, sidecar_url(obj.key))
    except FileNotFoundError:
        return None
    return bytes(result.bytes()), result.meta.get("last_modified")


def _check_sidecar(root: ET.Element, obj: ObjectId, modified: dt.datetime | None,
                   granule_modified: dt.datetime | None) -> None:
    name = root.attrib.get("name")
    where = f"{obj.name}: its DMR++ sidecar {obj.url}.dmrpp"
    if name is not None and name.rsplit("/", 1)[-1] != obj.name:
        raise SidecarError(f"{where} describes {name!r}, not this granule")
    ends = [int(c.attrib["offset"]) + int(c.attrib["nBytes"]) for c in root.iter(f"{{{_NS['dmrpp']}}}chunk")
            if "offset" in c.attrib and "nBytes" in c.attrib]
    if ends and max(ends) > obj.size:
        raise SidecarError(f"{where} points at bytes up to {max(ends)} but the object has {obj.size} bytes "
                           f"(ETag {obj.etag}): the sidecar was made for another version of the granule")
    if modified and granule_modified and modified < granule_modified - dt.timedelta(seconds=1):
        raise SidecarError(f"{where} ({modified:%Y-%m-%d %H:%M:%S}) is older than the object "
                           f"({granule_modified:%Y-%m-%d %H:%M:%S}, ETag {obj.etag}): the granule changed after "
                           "its sidecar was made")


def _groups_of(root: ET.Element) -> dict[str, ET.Element]:
    out: dict[str, ET.Element] = {}

    def walk(el: ET.Element, prefix: str) -> None:
        for g in el.findall("dap:Group", _NS):
            path = f"{prefix}{g.attrib.get('name', '')}"
            out[path] = g
            walk(g, path + "/")

    walk(root, "")
    return out


def _compact_values(el: ET.Element) -> dict[str, np.ndarray]:
    """The variables of a group element stored ``dmrpp:compact`` (base64 of the raw little-endian bytes)."""
    from virtualizarr.parsers.dmrpp import DMRParser

    out = {}
    for var in el:
        tag = var.tag.rsplit("}", 1)[-1]
        compact = var.find("dmrpp:compact", _NS)
        if compact is None or tag not in DMRParser._DAP_NP_DTYPE or DMRParser._DAP_NP_DTYPE[tag] == "object":
            continue
        out[var.attrib["name"]] = np.frombuffer(base64.b64decode((compact.text or "").strip()),
                                                dtype=np.dtype(DMRParser._DAP_NP_DTYPE[tag]).newbyteorder("<"))
    return out


def _parse_dmrpp(data: bytes, obj: ObjectId, store: Any) -> ParsedGranule:
    """Raises one of ``_PARSE_ERRORS`` when VirtualiZarr cannot parse the sidecar."""
    from virtualizarr.parsers.dmrpp import DMRParser

    root = ET.fromstring(data)
    elements = {p: el for p, el in _groups_of(root).items() if _wanted(p)}
    if not any(p.endswith(GROUP) for p in elements):
        raise ValueError(f"the sidecar has no gtx/{GROUP} group (flattened, or not ATL06)")
    parsed = ParsedGranule({}, parser="dmrpp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, el in elements.items():
            compact = _compact_values(el)
            group = DMRParser(root=root, data_filepath=obj.url).parse_dataset(object_store=store, group=path)._group
            keep = _keep(path, [n for n in group.arrays if n not in compact])
            parsed.groups[path] = _subset(group, keep)
            for name, values in compact.items():
                full = f"{path}/{name}"
                if full in SCALARS.values():
                    parsed.scalars[next(k for k, v in SCALARS.items() if v == full)] = _scalar(values)
                elif path.endswith(GROUP):
                    parsed.compact.setdefault(path, []).append(name)
    parsed.warnings = [str(w.message) for w in caught]
    return parsed


# -- the HDF5 route ------------------------------------------------------------------------------------


def _parse_hdf(obj: ObjectId, credentials: Any, registry: Any, store: Any) -> ParsedGranule:
    """HDFParser on the kept groups only (their other members dropped: parsing a whole ATL06 granule
    looks up the dimension scales of ~600 datasets), all from one block-cached file object."""
    import h5py
    from virtualizarr.parsers import HDFParser

    fh = BlockFile(credentials, obj, block_size=BLOCK_BYTES, store=store)
    if obj.size <= EAGER_BYTES:
        fh.prefetch()
    parsed = ParsedGranule({}, parser="hdf")
    plan: dict[str, list[str]] = {}
    try:
        with h5py.File(fh, "r") as f:
            for path in [f"{b}/{GROUP}" for b in TRACK_IDS] + sorted({p.rsplit("/", 1)[0] for p in SCALARS.values()}):
                g = f.get(path)
                if not isinstance(g, h5py.Group):
                    continue
                datasets = [n for n, o in g.items() if isinstance(o, h5py.Dataset)]
                keep = _keep(path, datasets)
                compact = [n for n in keep if g[n].id.get_create_plist().get_layout() == h5py.h5d.COMPACT]
                plan[path] = [n for n in g if n not in keep or n in compact]
                if path.endswith(GROUP) and compact:
                    parsed.compact[path] = compact
            for name, p in SCALARS.items():
                if isinstance(f.get(p), h5py.Dataset):
                    parsed.scalars[name] = _scalar(f[p][()])
        if not any(p.endswith(GROUP) for p in plan):
            raise VirtualStoreError(f"{obj.name}: no beam has a {GROUP} group: not an ATL06 granule")
        for path, drop in plan.items():
            group = HDFParser(group=path, drop_variables=drop, reader_factory=lambda _s, _p: fh)(obj.url, registry)
            parsed.groups[path] = _subset(group._group, list(group._group.arrays))
    except OSError as exc:
        raise VirtualStoreError(f"{obj.name}: the object cannot be read as HDF5: {exc}") from None
    parsed.gets, parsed.bytes_read = fh.gets, fh.bytes_fetched
    return parsed


def _subset(group: Any, names: list[str]) -> Any:
    from virtualizarr.manifests import ManifestGroup

    return ManifestGroup(arrays={n: group.arrays[n] for n in names}, attributes=dict(group.metadata.attributes))


def parse_granule(obj: ObjectId, credentials: Any, parser: Parser = "auto") -> ParsedGranule:
    """One granule's groups, from its DMR++ sidecar (``parser="dmrpp"``, or ``"auto"`` when a parseable
    one is there) or from the HDF5 object (``"hdf"``, or ``"auto"`` without a parseable sidecar: a
    warning names the granule). Raises :class:`SidecarError` for a sidecar that does not match its
    granule, :class:`VirtualStoreError` for an object that is not an ATL06 HDF5 file."""
    import obstore
    from obspec_utils.registry import ObjectStoreRegistry

    if parser not in ("auto", "dmrpp", "hdf"):
        raise ValueError(f"parser must be 'auto', 'dmrpp' or 'hdf', not {parser!r}")
    store = credentials.obstore(obj.bucket)
    registry = ObjectStoreRegistry({f"s3://{obj.bucket}": store})
    why = "sidecar skipped (parser='hdf')"
    if parser != "hdf":
        got = _fetch_sidecar(obj, store)
        if got is None:
            why = f"no DMR++ sidecar at {obj.url}.dmrpp"
        else:
            data, modified = got
            try:
                root = ET.fromstring(data)
            except ET.ParseError as exc:
                root, why = None, f"its DMR++ sidecar is not XML ({exc})"
            if root is not None:
                granule_modified = obstore.head(store, obj.key).get("last_modified")
                _check_sidecar(root, obj, modified, granule_modified)
                try:
                    parsed = _parse_dmrpp(data, obj, store)
                except _PARSE_ERRORS as exc:
                    why = f"VirtualiZarr cannot parse its DMR++ sidecar ({type(exc).__name__} {exc})"
                else:
                    parsed.gets, parsed.bytes_read = 1, len(data)
                    return parsed
        if parser == "dmrpp":
            raise SidecarError(f"{obj.name}: {why}")
        warnings.warn(f"{obj.name}: {why}; reading the HDF5 object with HDFParser instead", stacklevel=3)
    parsed = _parse_hdf(obj, credentials, registry, store)
    if parser != "hdf":
        parsed.warnings.insert(0, why)
    return parsed

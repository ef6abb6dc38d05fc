"""DMR++ sidecars written from an HDF5 file's own metadata (h5py's chunk index; no Hyrax needed).

A DMR++ file (OPeNDAP's DAP4 metadata plus a ``dmrpp`` namespace of byte ranges) lets a reader get
every chunk of an HDF5 file without reading the file's metadata. NSIDC publishes one next to each
granule, at ``<granule URL>.dmrpp`` (:func:`sidecar_url`). Hyrax's ``build_dmrpp`` is C++ and not on
PyPI, so this module writes the same XML from ``h5py``: ``Dataset.id.chunk_iter`` gives every
chunk's element offset, byte offset and size, the dataset creation property list gives the filters.

Two styles (spec ``virtual-kerchunk-repack.md``, DMR++ section; ``library-notes.md`` section 2):

``nested``
    What a current ``build_dmrpp`` writes: nested ``<Group>``s, each dimension scale declared as a
    ``<Dimension>`` in its own group *before* the variable of the same name, ``<Dim name="/fqn"/>``
    references (anonymous ``<Dim size=".."/>`` for axes without a scale), typed attributes, and a
    ``<dmrpp:chunks>`` element (filters in encoding order, fill value, byte order) for every
    chunked or contiguous variable. VirtualiZarr's ``DMRPPParser`` reads it; its known gaps
    (2.8.0) are kept as they are, not worked around:

    * COMPACT datasets are written as build_dmrpp writes them, a ``<dmrpp:compact>`` element (base64
      of the raw bytes) without ``<dmrpp:chunks>``: the parser warns "could not be parsed" and skips
      the variable;
    * fixed-length strings get ``<dmrpp:FixedLengthStringArray>`` plus their byte range, variable-length
      strings a ``<dmrpp:vlsa>`` of their values: the parser skips both with the same warning;
    * scalars (shape ``()``) get their byte range but the parser reads them as the fill value;
    * ``byteOrder="BE"`` is written for big-endian data and ignored by the parser.

``nsidc-flat``
    What NSIDC serves for v006 today (Hyrax's ``H5.EnableCF`` output, e.g. OPENDAP/bes
    ``ATL03_compact.dmrpp``): no groups, variable names flattened (``gt1l/land_ice_segments/h_li`` ->
    ``gt1l_land_ice_segments_h_li``), every dimension at the root (``phony_dim_N`` for axes without a
    scale), group attributes as ``type="Container"`` attributes, ``origname``/``fullnamepath``
    attributes, ``<Attribute name="DIMENSION_LIST" type="null">`` on every variable with scales
    (VirtualiZarr 2.8.0 and pydap 3.5.11 fail the whole parse on it with ``KeyError: 'null'``),
    ``<dmrpp:compact>`` without ``<dmrpp:chunks>``, and ``dmrpp:href`` set to Hyrax's placeholder.

>>> xml = write_dmrpp("ATL06_x.h5", style="nested")                  # doctest: +SKIP
>>> write_sidecar("ATL06_x.h5")                                       # doctest: +SKIP
PosixPath('ATL06_x.h5.dmrpp')
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Literal
from xml.sax.saxutils import escape

import h5py
import numpy as np
from h5py import h5a, h5d, h5ds, h5o, h5s, h5t, h5z

Style = Literal["nested", "nsidc-flat"]
STYLES: tuple[str, ...] = ("nested", "nsidc-flat")
SIDECAR_SUFFIX = ".dmrpp"
HREF_PLACEHOLDER = "OPeNDAP_DMRpp_DATA_ACCESS_URL"  # what Hyrax writes when the data URL is set at serve time
DAP_NS = "http://xml.opendap.org/ns/DAP/4.0#"
DMRPP_NS = "http://xml.opendap.org/dap/dmrpp/1.0.0#"
ENCODING = "ISO-8859-1"  # the declaration of Hyrax's sidecars; characters beyond it become character references

# numpy kind+itemsize -> DAP4 type (Hyrax writes unsigned 8-bit integers as Byte)
_DAP_TYPES = {("i", 1): "Int8", ("u", 1): "Byte", ("i", 2): "Int16", ("u", 2): "UInt16", ("i", 4): "Int32",
              ("u", 4): "UInt32", ("i", 8): "Int64", ("u", 8): "UInt64", ("f", 4): "Float32", ("f", 8): "Float64"}
# HDF5 filter id -> DMR++ compressionType word
_FILTERS = {h5z.FILTER_DEFLATE: "deflate", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32"}
# attributes of the HDF5 dimension-scale API and netCDF-4 bookkeeping: structure, not metadata
_HIDDEN_ATTRS = frozenset({"DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME", "_Netcdf4Dimid",
                           "_Netcdf4Coordinates", "_nc3_strict", "_NCProperties"})
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_LITTLE = np.little_endian  # what "=" (native) byte order means here


class DmrppError(ValueError):
    """The input cannot be described by a DMR++ file (not HDF5, or a feature DMR++ has no element for)."""


def sidecar_url(granule_url: str) -> str:
    """Where NSIDC publishes a granule's DMR++ sidecar: the granule URL (or key, or path) plus ``.dmrpp``."""
    return granule_url + SIDECAR_SUFFIX


def write_dmrpp(source: str | os.PathLike[str] | h5py.File | IO[bytes], style: Style = "nested", *,
                href: str | None = None, name: str | None = None) -> str:
    """The DMR++ XML text describing the HDF5 file ``source`` (a path, an open ``h5py.File`` or a binary
    file object), in ``style`` ``"nested"`` or ``"nsidc-flat"`` (see the module docstring).

    ``href`` is the root ``dmrpp:href`` (default: Hyrax's placeholder; VirtualiZarr ignores it and reads
    the data from the sidecar URL minus ``.dmrpp``). ``name`` is the root ``name`` (default: the file name).
    Raises :class:`DmrppError` for a file that is not HDF5 or holds something DMR++ cannot describe
    (a filter other than deflate/shuffle/fletcher32, a compound or reference dataset), naming it.
    """
    if style not in STYLES:
        raise ValueError(f"unknown DMR++ style {style!r}; choose one of {', '.join(STYLES)}")
    with _open(source) as f:
        label = name or Path(str(f.filename)).name or "dataset.h5"
        walker = _Walker(f, style == "nsidc-flat")
        walker.walk(f, "/")
        return walker.document(label, href or HREF_PLACEHOLDER)


def write_sidecar(h5_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                  style: Style = "nsidc-flat", href: str | None = None) -> Path:
    """Write the DMR++ sidecar of ``h5_path`` to ``out`` (default :func:`sidecar_url` of the path), atomically
    (a temporary file renamed into place); returns its path."""
    h5_path = Path(h5_path)
    target = Path(out) if out is not None else Path(sidecar_url(str(h5_path)))
    data = write_dmrpp(h5_path, style, href=href).encode(ENCODING, errors="xmlcharrefreplace")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# -- input -----------------------------------------------------------------------------------------------------


@contextmanager
def _open(source: Any) -> Iterator[h5py.File]:
    if isinstance(source, h5py.File):
        yield source
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no file {path} to describe in DMR++")
        if not h5py.is_hdf5(path):
            raise DmrppError(f"{path} is not an HDF5 file (no HDF5 signature): DMR++ sidecars describe HDF5 files")
        label: str = str(path)
    else:
        label = getattr(source, "name", None) or type(source).__name__
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise DmrppError(f"{label} is not a readable HDF5 file ({exc}): DMR++ sidecars describe HDF5 files") from None
    with f:
        yield f


# -- the walk --------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """One attribute or fill value as DMR++ text: shortest round-trip floats, plain ints, decoded strings."""
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return _XML_INVALID.sub("", value)
    if isinstance(value, (np.floating, float)):
        return str(value) if isinstance(value, np.floating) else repr(value)
    if isinstance(value, (np.integer, int, np.bool_, bool)):
        return str(int(value))
    return str(value)


def _q(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _flat(path: str) -> str:
    """Hyrax's CF name of an HDF5 path: the path without its leading slash, non-alphanumerics as ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", path.strip("/"))


@dataclass
class _Group:
    """The XML lines of one group, built during the walk (dimensions first, see ``document``)."""

    dimensions: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)


class _Walker:
    def __init__(self, f: h5py.File, flat: bool) -> None:
        self.f = f
        self.flat = flat
        self.root = _Group()
        self.flat_dims: dict[str, int] = {}  # root Dimension name -> size (flat style)
        self.phony: dict[int, str] = {}  # size -> phony_dim_N (flat style)
        self.containers: list[str] = []  # group attribute containers (flat style)
        self.paths: dict[int, str] = {}  # object address -> path, to name dimension scales
        h5o.visit(f.id, lambda name, info: self.paths.setdefault(info.addr, "/" + name.decode()) and None,
                  info=True)

    # nested: groups become <Group> elements; flat: everything lands in ``self.root``
    def walk(self, group: h5py.Group, path: str, into: _Group | None = None, depth: int = 1) -> None:
        into = into or self.root
        pad = "    " * (0 if self.flat else depth)
        subgroups: list[tuple[str, h5py.Group]] = []
        for key in group:
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                continue  # soft/external links: Hyrax ignores them too
            obj = group[key]
            child = path.rstrip("/") + "/" + key
            if isinstance(obj, h5py.Group):
                subgroups.append((child, obj))
            elif isinstance(obj, h5py.Dataset):
                into.body.extend(self.variable(obj, child, pad, into))
        attrs = self.attributes(group, pad + ("    " if self.flat and path != "/" else ""))
        if self.flat and path != "/" and attrs:
            self.containers.append(f'{pad}<Attribute name="{_q(_flat(path))}" type="Container">')
            self.containers.extend(attrs)
            self.containers.append(f"{pad}</Attribute>")
        elif not self.flat or path == "/":
            into.body.extend(attrs)
        for child, obj in subgroups:
            if self.flat:
                self.walk(obj, child)
                continue
            sub = _Group()
            self.walk(obj, child, sub, depth + 1)
            into.body.append(f'{pad}<Group name="{_q(child.rsplit("/", 1)[1])}">')
            into.body.extend(sub.dimensions + sub.body)
            into.body.append(f"{pad}</Group>")

    def variable(self, ds: h5py.Dataset, path: str, pad: str, group: _Group) -> list[str]:
        dtype = ds.dtype
        string_info = h5py.check_string_dtype(dtype)
        if string_info is not None:
            dap = "String"
        elif (dtype.kind, dtype.itemsize) in _DAP_TYPES:
            dap = _DAP_TYPES[(dtype.kind, dtype.itemsize)]
        else:
            raise DmrppError(f"{self.f.filename}: dataset {path} has type {dtype}, which DMR++ cannot describe")
        vname = _flat(path) if self.flat else path.rsplit("/", 1)[1]
        inner = pad + "    "
        out = [f'{pad}<{dap} name="{_q(vname)}">']
        out.extend(inner + d for d in self.dims(ds, path, group))
        out.extend(self.attributes(ds, inner))
        if self.flat:
            if "DIMENSION_LIST" in ds.attrs:
                out.append(f'{inner}<Attribute name="DIMENSION_LIST" type="null">')
                out.append(f"{inner}    <Value>UNKNOWN</Value>")
                out.append(f"{inner}</Attribute>")
            out.extend(_string_attr(inner, "origname", path.rsplit("/", 1)[1]))
            out.extend(_string_attr(inner, "fullnamepath", path))
        out.extend(self.storage(ds, path, inner, string_info))
        out.append(f"{pad}</{dap}>")
        return out

    def dims(self, ds: h5py.Dataset, path: str, group: _Group) -> list[str]:
        """``<Dim>`` children of a variable; declares the ``<Dimension>`` of a scale (in its group, or at the
        root in flat style)."""
        dsid = ds.id
        out: list[str] = []
        scale = h5ds.is_scale(dsid)
        for axis, size in enumerate(ds.shape):
            names: list[tuple[str, int]] = []  # (path, length) of the axis' first scale
            if scale and axis == 0:
                names.append((path, size))
            elif h5ds.get_num_scales(dsid, axis) > 0:
                # the scale's path from its address (H5Iget_name searches the file: 2 ms a call)
                h5ds.iterate(dsid, axis, lambda sid: names.append((self.paths[h5o.get_info(sid).addr],
                                                                   sid.shape[0])) or 1)
            if names:
                fqn, length = names[0]
                if self.flat:
                    dname = _flat(fqn)
                    self.flat_dims.setdefault(dname, length)
                    out.append(f'<Dim name="/{_q(dname)}"/>')
                else:
                    out.append(f'<Dim name="{_q(fqn)}"/>')
            elif self.flat:
                dname = self.phony.setdefault(size, f"phony_dim_{len(self.phony)}")
                self.flat_dims.setdefault(dname, size)
                out.append(f'<Dim name="/{dname}"/>')
            else:
                out.append(f'<Dim size="{size}"/>')
        if scale and not self.flat and ds.ndim == 1:
            group.dimensions.append(f'{"    " * path.count("/")}<Dimension name="{_q(path.rsplit("/", 1)[1])}" '
                                    f'size="{ds.shape[0]}"/>')
        return out

    def attributes(self, obj: h5py.HLObject, pad: str) -> list[str]:
        """Typed ``<Attribute>`` elements of an object (read with the low-level API: the attributes are most
        of the cost of a sidecar)."""
        out: list[str] = []
        for index in range(h5a.get_num_attrs(obj.id)):
            aid = h5a.open(obj.id, index=index)
            key = aid.name.decode("utf-8", "replace")
            if key in _HIDDEN_ATTRS or aid.get_space().get_simple_extent_type() == h5s.NULL:
                continue
            tid = aid.get_type()
            cls = tid.get_class()
            if cls == h5t.STRING and tid.is_variable_str():
                dap, values = "String", np.atleast_1d(obj.attrs[key]).ravel()  # h5py's own conversion
            elif cls == h5t.STRING:
                dap, values = "String", np.empty(aid.shape, dtype=f"S{tid.get_size()}")
                aid.read(values, mtype=tid)
            elif cls in (h5t.INTEGER, h5t.FLOAT) and (tid.dtype.kind, tid.get_size()) in _DAP_TYPES:
                dap, values = _DAP_TYPES[(tid.dtype.kind, tid.get_size())], np.empty(aid.shape, dtype=tid.dtype)
                aid.read(values, mtype=tid)
            else:
                continue  # references, compounds, enums: nothing DAP4 can type
            out.append(f'{pad}<Attribute name="{_q(key)}" type="{dap}">')
            out.extend(f"{pad}    <Value>{_q(_text(v))}</Value>" for v in values.ravel())
            out.append(f"{pad}</Attribute>")
        return out

    def storage(self, ds: h5py.Dataset, path: str, pad: str, string_info: Any) -> list[str]:
        """The ``dmrpp`` elements: compact data, or the chunks with their filters."""
        dsid = ds.id
        dcpl = dsid.get_create_plist()
        layout = dcpl.get_layout()
        if string_info is not None and string_info.length is None:  # variable-length strings: the values
            values = np.atleast_1d(ds.asstr()[()]).ravel()
            return ([f"{pad}<dmrpp:vlsa>"] + [f"{pad}    <dmrpp:v>{_q(_text(v))}</dmrpp:v>" for v in values]
                    + [f"{pad}</dmrpp:vlsa>"])
        out: list[str] = []
        if string_info is not None:
            pad_kind = {h5t.STR_NULLTERM: "null_term", h5t.STR_NULLPAD: "null_pad", h5t.STR_SPACEPAD: "space_pad"}[dsid.get_type().get_strpad()]
            out.append(f'{pad}<dmrpp:FixedLengthStringArray string_length="{string_info.length}" pad="{pad_kind}"/>')
        if layout == h5d.COMPACT:
            raw = np.ascontiguousarray(ds[()]).tobytes()
            return out + [f"{pad}<dmrpp:compact>{base64.b64encode(raw).decode()}</dmrpp:compact>"]
        words: list[str] = []
        level: int | None = None
        for i in range(dcpl.get_nfilters()):
            code, _flags, values, fname = dcpl.get_filter(i)
            if code not in _FILTERS:
                raise DmrppError(f"{self.f.filename}: dataset {path} uses HDF5 filter {code} "
                                 f"({fname.decode(errors='replace')}), which DMR++ cannot describe")
            words.append(_FILTERS[code])
            if code == h5z.FILTER_DEFLATE:
                level = int(values[0]) if len(values) else None
        head = [f"{pad}<dmrpp:chunks"]
        if words:
            head.append(f' compressionType="{" ".join(words)}"')
            if "deflate" in words and level is not None:
                head.append(f' deflateLevel="{level}"')
        if string_info is None:
            head.append(f' fillValue="{_q(_text(ds.fillvalue))}"')
        order = ds.dtype.byteorder
        head.append(f' byteOrder="{"BE" if order == ">" or (order == "=" and not _LITTLE) else "LE"}">')
        out.append("".join(head))
        inner = pad + "    "
        if layout == h5d.CHUNKED:
            out.append(f"{inner}<dmrpp:chunkDimensionSizes>{' '.join(map(str, ds.chunks))}</dmrpp:chunkDimensionSizes>")
            chunks: list[str] = []

            def add(info: Any) -> None:
                mask = f' fm="{info.filter_mask}"' if info.filter_mask else ""
                chunks.append(f'{inner}<dmrpp:chunk offset="{info.byte_offset}" nBytes="{info.size}" '
                              f'chunkPositionInArray="[{",".join(map(str, info.chunk_offset))}]"{mask}/>')

            dsid.chunk_iter(add)
            out.extend(chunks)
        else:  # contiguous: one piece, no position (nothing when never written)
            offset = dsid.get_offset()
            if offset is not None:
                out.append(f'{inner}<dmrpp:chunk offset="{offset}" nBytes="{dsid.get_storage_size()}"/>')
        out.append(f"{pad}</dmrpp:chunks>")
        return out

    def document(self, name: str, href: str) -> str:
        head = [f'<?xml version="1.0" encoding="{ENCODING}"?>',
                f'<Dataset xmlns="{DAP_NS}" xmlns:dmrpp="{DMRPP_NS}" dapVersion="4.0" '
                f'dmrVersion="{"1.0" if self.flat else "2.0"}" name="{_q(name)}" dmrpp:href="{_q(href)}">']
        if self.flat:
            dims = [f'    <Dimension name="{_q(n)}" size="{s}"/>' for n, s in self.flat_dims.items()]
            body = dims + ["    " + line for line in self.root.body] + ["    " + line for line in self.containers]
        else:
            body = (self.root.dimensions + self.root.body
                    + ['    <Attribute name="build_dmrpp_metadata" type="Container">']
                    + _string_attr("        ", "build_dmrpp", "is2cloud.dmrpp (from the h5py chunk index; not Hyrax)")
                    + ["    </Attribute>"])
        return "\n".join(head + body + ["</Dataset>", ""])



def _string_attr(pad: str, name: str, value: str) -> list[str]:
    return [f'{pad}<Attribute name="{_q(name)}" type="String">', f"{pad}    <Value>{_q(_text(value))}</Value>",
            f"{pad}</Attribute>"]


__all__ = ["DmrppError", "HREF_PLACEHOLDER", "SIDECAR_SUFFIX", "STYLES", "sidecar_url", "write_dmrpp",
           "write_sidecar"]

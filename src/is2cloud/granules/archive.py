"""Sample archives: presets of synthetic granules generated in parallel, cached on disk, with UMM-G records.

Layout (docs/CONTRACTS.md)::

    <cache>/archive/<preset>/
        manifest.json                   preset, generator_version, seed, created, generation_seconds,
                                        objects [{bucket, key, size, etag}], products {...}, granules [...]
        objects/<bucket>/<key>          keys as at NSIDC: ATLAS/<PRODUCT>/006/YYYY/MM/DD/<name>
        objects/<bucket>/<key>.dmrpp    the granule's DMR++ sidecar (NSIDC's flat style, see is2cloud.dmrpp)
        catalog/<SHORTNAME>_<VVV>.jsonl one UMM-G record ({"meta", "umm"}) per line
        .complete                       written last; without it (or with another generator version,
                                        seed, bucket or preset definition) the archive is regenerated

Archives are generated into a temporary directory next to the final one and renamed into place, under a
file lock, so no reader ever sees half an archive.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from is2cloud.dmrpp import SIDECAR_SUFFIX, sidecar_url, write_sidecar
from is2cloud.granules import orbit
from is2cloud.granules.common import GENERATOR_VERSION, WrittenGranule
from is2cloud.granules.orbit import GranuleSpec
from is2cloud.progress import Progress

log = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[3] / "data"
HTTPS_ROOT = "https://data.nsidc.earthdatacloud.nasa.gov"
S3_CREDENTIALS_URL = "https://data.nsidc.earthdatacloud.nasa.gov/s3credentials"
PROVIDER = "NSIDC_CPRD"
COLLECTION_CONCEPT_IDS = {("ATL03", "006"): "C2596864127-NSIDC_CPRD", ("ATL06", "006"): "C2670138092-NSIDC_CPRD"}
DEFAULT_SAMPLE_CYCLES: tuple[int, ...] = (3, 6)


# -- presets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Granules of one product over one AOI: every planned crossing, optionally thinned."""

    aoi: str  # file name in data/ or a path
    product: str
    cycles: tuple[int, ...]
    window: str | None = None  # "aoi" or "region" (default per product, see plan_granules)
    margin_m: float = 2000.0
    rgts: tuple[int, ...] | None = None  # keep only these RGTs
    limit_per_cycle: int | None = None  # keep the first n crossings of each cycle


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    requests: tuple[Request, ...]

    def signature(self) -> str:
        text = json.dumps([asdict(r) for r in self.requests], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


PRESETS: dict[str, Preset] = {
    "test": Preset(
        "test",
        "tiny: two Greenland ATL06 granules of one RGT in two cycles (both spacecraft orientations), "
        "shortened to the AOI +/- 5 km, and two Grand Mesa ATL03 granules of RGT 295 (the real Grand Mesa "
        "track), shortened to the AOI +/- 1 km",
        (
            Request("greenland_aoi.geojson", "ATL06", (3, 5), window="aoi", margin_m=5000.0, rgts=(94,)),
            Request("grandmesa.geojson", "ATL03", (3, 5), window="aoi", margin_m=1000.0, rgts=(295,)),
        ),
    ),
    "book": Preset(
        "book",
        "every Greenland ATL06 granule crossing the AOI in cycles 3, 8, 13 and 18 (2019-03 to 2023-03, both "
        "orientations), full along-track length; every Grand Mesa ATL03 granule in cycles 3 and 6, shortened "
        "to the AOI +/- 2 km; one long Greenland ATL03 granule (RGT 94, cycle 3, the AOI +/- 500 km within "
        "its region: ~890 km, ~385 MB) for the cost of scanning a large granule's metadata (kerchunk)",
        (
            Request("greenland_aoi.geojson", "ATL06", (3, 8, 13, 18)),
            Request("grandmesa.geojson", "ATL03", (3, 6)),
            Request("greenland_aoi.geojson", "ATL03", (3,), window="aoi", margin_m=500_000.0, rgts=(94,)),
        ),
    ),
    "bench": Preset(
        "bench",
        "every Greenland ATL06 granule crossing the AOI in cycles 2 to 29 (2018-12 to 2025-09), full "
        "along-track length",
        (Request("greenland_aoi.geojson", "ATL06", tuple(range(2, 30))),),
    ),
}


def preset_specs(preset: str | Preset, seed: int) -> list[GranuleSpec]:
    p = PRESETS[preset] if isinstance(preset, str) else preset
    specs: list[GranuleSpec] = []
    for r in p.requests:
        specs.extend(_request_specs(r, seed))
    return _unique(specs)


def _request_specs(r: Request, seed: int) -> list[GranuleSpec]:
    aoi_path = Path(r.aoi) if Path(r.aoi).is_absolute() else REPO_DATA / r.aoi
    specs = orbit.plan_granules(aoi_path, r.product, r.cycles, window=r.window, margin_m=r.margin_m, seed=seed)
    if r.rgts is not None:
        specs = [s for s in specs if s.rgt in r.rgts]
    if r.limit_per_cycle is not None:
        kept: list[GranuleSpec] = []
        for cycle in r.cycles:
            kept.extend([s for s in specs if s.cycle == cycle][: r.limit_per_cycle])
        specs = kept
    return specs


def _unique(specs: Iterable[GranuleSpec]) -> list[GranuleSpec]:
    seen: dict[str, GranuleSpec] = {}
    for s in specs:
        seen.setdefault(s.key, s)
    return sorted(seen.values(), key=lambda s: (s.product, s.start_delta_time))


# -- the archive object ---------------------------------------------------------------------------------


@dataclass
class Archive:
    """A generated archive on disk."""

    root: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def preset(self) -> str:
        return str(self.manifest.get("preset", ""))

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def keys(self) -> list[str]:
        """The object keys of the granules (not of their sidecars)."""
        return [o["key"] for o in self.granule_objects]

    @property
    def objects(self) -> list[dict[str, Any]]:
        """Every object of the archive: the granules and their ``.dmrpp`` sidecars."""
        return list(self.manifest["objects"])

    @property
    def granule_objects(self) -> list[dict[str, Any]]:
        """The objects that are granules."""
        return [o for o in self.manifest["objects"] if not o["key"].endswith(SIDECAR_SUFFIX)]

    @property
    def generation_seconds(self) -> float:
        return float(self.manifest.get("generation_seconds", 0.0))

    @property
    def total_bytes(self) -> int:
        return int(sum(o["size"] for o in self.manifest["objects"]))

    def path_of(self, key: str, bucket: str | None = None) -> Path:
        """Local file of an object key."""
        for o in self.manifest["objects"]:
            if o["key"] == key and (bucket is None or o["bucket"] == bucket):
                return self.objects_dir / o["bucket"] / o["key"]
        raise KeyError(f"{key!r} is not an object of archive {self.root}")

    def umm_records(self, product: str | None = None, version: str = orbit.RELEASE) -> list[dict[str, Any]]:
        """The UMM-G records of the archive (of one product if given)."""
        files = sorted(self.catalog_dir.glob("*.jsonl"))
        if product is not None:
            files = [self.catalog_dir / f"{product.upper()}_{version}.jsonl"]
        out: list[dict[str, Any]] = []
        for path in files:
            if path.exists():
                out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return out

    def __str__(self) -> str:
        n = len(self.granule_objects)
        products = ", ".join(f"{v['granules']} {k}" for k, v in self.manifest.get("products", {}).items())
        return (f"archive {self.preset!r}: {n} granules ({products}) with DMR++ sidecars, "
                f"{self.total_bytes / 1e6:.0f} MB, "
                f"generated in {self.generation_seconds:.0f} s, at {self.root}")


def load_archive(root: str | Path) -> Archive:
    """Open a complete archive directory; raises FileNotFoundError if it is missing or incomplete."""
    root = Path(root)
    if not (root / ".complete").exists() or not (root / "manifest.json").exists():
        raise FileNotFoundError(f"{root} is not a complete is2cloud archive (no .complete/manifest.json)")
    return Archive(root, json.loads((root / "manifest.json").read_text()))


# -- generation -------------------------------------------------------------------------------------------


def generate_granule(spec: GranuleSpec, path: str | Path, *, created: str | None = None) -> WrittenGranule:
    """Write one granule of either product."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if spec.product == "ATL03":
        from is2cloud.granules.atl03 import write_atl03

        return write_atl03(spec, path, created=created)
    from is2cloud.granules.atl06 import write_atl06

    return write_atl06(spec, path, created=created)


def _md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            md5.update(block)
    return md5.hexdigest()


def _work(args: tuple[GranuleSpec, str, str]) -> dict[str, Any]:
    """Worker: generate one granule and its DMR++ sidecar (as NSIDC serves them) into the temporary archive
    and describe them."""
    spec, root, bucket = args
    path = Path(root) / "objects" / bucket / spec.key
    written = generate_granule(spec, path)
    sidecar = write_sidecar(path, style="nsidc-flat")
    return {
        "spec": spec, "bucket": bucket, "key": spec.key, "size": path.stat().st_size, "etag": _md5(path),
        "sidecar": {"bucket": bucket, "key": sidecar_url(spec.key), "size": sidecar.stat().st_size,
                    "etag": _md5(sidecar)},
        "extent": written.extent, "records": written.records, "seconds": round(written.seconds, 3),
        "footprints": {k: v.tolist() for k, v in written.footprints.items()},
    }


def _generate(specs: Sequence[GranuleSpec], root: Path, bucket: str, workers: int | None,
              progress: bool | None = None, label: str = "archive") -> list[dict[str, Any]]:
    """Generate every granule of ``specs`` (with its sidecar) under ``root``, in any order. ``progress``:
    ``<label>: granules i/n done, <elapsed> s`` on stderr, counted as each granule finishes and repeated
    while none does, so a log never goes quiet for minutes (:class:`is2cloud.progress.Progress`)."""
    # biggest jobs first, so the two workers finish together
    order = sorted(specs, key=lambda s: -(s.window[1] - s.window[0]) * (8.0 if s.product == "ATL03" else 1.0))
    jobs = [(s, str(root), bucket) for s in order]
    workers = max(1, min(workers or _default_workers(), len(jobs)))
    bar = Progress(len(jobs), f"{label}: granules", progress, stream=sys.stderr)
    if workers == 1:
        results = []
        for j in jobs:
            results.append(_work(j))
            bar.update()
        return results
    # fork is cheap and never re-imports __main__; a parent with threads (a Jupyter kernel) spawns instead
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    os.environ[_GENERATING] = str(os.getpid())
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending = {pool.submit(_work, j) for j in jobs}
            results = []
            try:
                while pending:
                    done, pending = wait(pending, timeout=bar.interval, return_when=FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        log.info("generated %d/%d %s (%.1f s)", len(results) + 1, len(jobs), res["spec"].name,
                                 res["seconds"])
                        results.append(res)
                        bar.update()
                    if not done:
                        bar.tick()
            finally:
                for fut in pending:  # after a failure: do not start the granules still queued
                    fut.cancel()
            return results
    except BrokenProcessPool as exc:
        raise RuntimeError("a granule generator process died. If this runs from a script, guard the script's top "
                           "level with `if __name__ == \"__main__\":` (spawned processes re-import it); or pass "
                           "workers=1") from exc
    finally:
        os.environ.pop(_GENERATING, None)


_GENERATING = "IS2CLOUD_GENERATING_ARCHIVE"


def _refuse_in_generator_child() -> None:
    """A spawned generator process re-imports an unguarded ``__main__`` script, which would call
    publish_archive again and wait forever for the parent's lock: fail loudly instead."""
    parent = os.environ.get(_GENERATING)
    if parent and parent != str(os.getpid()):
        raise RuntimeError("publish_archive/sample_data was called while importing __main__ in a granule "
                           "generator process: guard the script's top level with `if __name__ == \"__main__\":`")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _write_archive(root: Path, results: list[dict[str, Any]], *, preset: str, seed: int, signature: str,
                   seconds: float, description: str, bucket: str) -> dict[str, Any]:
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = sorted(results, key=lambda r: r["key"])
    catalog: dict[str, list[str]] = {}
    products: dict[str, dict[str, Any]] = {}
    for r in results:
        spec: GranuleSpec = r["spec"]
        record = umm_g(spec, size=r["size"], md5=r["etag"], bucket=bucket, footprints=r["footprints"],
                       created=created)
        catalog.setdefault(f"{spec.product}_{spec.release}", []).append(json.dumps(record, separators=(",", ":")))
        p = products.setdefault(spec.product, {"granules": 0, "bytes": 0, "cycles": set(), "rgts": set(),
                                               "shortened": 0, "surface": set()})
        p["granules"] += 1
        p["bytes"] += r["size"]
        p["cycles"].add(spec.cycle)
        p["rgts"].add(spec.rgt)
        p["shortened"] += int(spec.shortened)
        p["surface"].add(spec.surface)
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    for name, lines in catalog.items():
        (root / "catalog" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    manifest = {
        "preset": preset,
        "description": description,
        "generator_version": GENERATOR_VERSION,
        "preset_signature": signature,
        "seed": seed,
        "bucket": bucket,
        "created": created,
        "generation_seconds": round(seconds, 2),
        "synthetic": True,
        "objects": [o for r in results
                    for o in ({"bucket": r["bucket"], "key": r["key"], "size": r["size"], "etag": r["etag"]},
                              r["sidecar"])],
        "products": {k: {**v, "cycles": sorted(v["cycles"]), "rgts": sorted(v["rgts"]), "surface": sorted(v["surface"])}
                     for k, v in sorted(products.items())},
        "granules": [{"name": r["spec"].name, "key": r["key"], "product": r["spec"].product, "rgt": r["spec"].rgt,
                      "cycle": r["spec"].cycle, "region": r["spec"].region, "shortened": r["spec"].shortened,
                      "window_m": list(r["spec"].window), "records": r["records"], "seconds": r["seconds"]}
                     for r in results],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (root / ".complete").write_text(created + "\n")
    return manifest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_current(root: Path, *, seed: int, signature: str, bucket: str) -> bool:
    try:
        archive = load_archive(root)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    m = archive.manifest
    if (m.get("generator_version") != GENERATOR_VERSION or m.get("seed") != seed
            or m.get("preset_signature") != signature or m.get("bucket") != bucket):
        return False
    return all((archive.objects_dir / o["bucket"] / o["key"]).is_file() for o in m["objects"])


def _build(final: Path, specs: Sequence[GranuleSpec], *, preset: str, seed: int, signature: str, description: str,
           bucket: str, workers: int | None, progress: bool | None = None) -> Archive:
    """Generate ``specs`` into a temporary sibling of ``final`` and rename it into place."""
    if not specs:
        raise ValueError(f"nothing to generate for {preset!r}: no granule crosses the AOI in those cycles")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        results = _generate(specs, tmp, bucket, workers, progress, label=f"archive {preset!r}")
        _write_archive(tmp, results, preset=preset, seed=seed, signature=signature,
                       seconds=time.perf_counter() - t0, description=description, bucket=bucket)
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_archive(final)


def publish_archive(preset: str, *, cache_dir: str | Path | None = None, force: bool = False,
                    workers: int | None = None, seed: int | None = None, bucket: str | None = None,
                    progress: bool | None = None) -> Archive:
    """The sample archive of a preset (``test``, ``book`` or ``bench``), generated if missing or stale.

    ``cache_dir`` defaults to ``settings.cache_dir``; the archive lives in ``<cache_dir>/archive/<preset>``.
    ``force`` regenerates it. ``workers`` processes generate granules in parallel (default: all CPUs).
    ``seed`` and ``bucket`` default to ``settings.seed`` and ``settings.archive_bucket``. ``progress``: a
    progress line on stderr while generating (default: when someone watches, :mod:`is2cloud.progress`).
    """
    from is2cloud.settings import get_settings

    _refuse_in_generator_child()
    if preset not in PRESETS:
        raise ValueError(f"unknown archive preset {preset!r}; choose one of {', '.join(PRESETS)}")
    settings = get_settings()
    seed = settings.seed if seed is None else int(seed)
    bucket = bucket or settings.archive_bucket
    root = Path(cache_dir or settings.cache_dir) / "archive" / preset
    p = PRESETS[preset]
    signature = p.signature()
    with _locked(root.parent / f".{preset}.lock"):
        if not force and _is_current(root, seed=seed, signature=signature, bucket=bucket):
            return load_archive(root)
        log.info("generating the %r sample archive in %s", preset, root)
        specs = preset_specs(p, seed)
        return _build(root, specs, preset=preset, seed=seed, signature=signature, description=p.description,
                      bucket=bucket, workers=workers, progress=progress)


def sample_data(aoi: Any, product: str, cycles: Iterable[int] | None = None, out_dir: str | Path | None = None, *,
                seed: int | None = None, window: str | None = None, margin_m: float = 2000.0,
                workers: int | None = None, cache_dir: str | Path | None = None, bucket: str | None = None,
                force: bool = False, progress: bool | None = None) -> Archive:
    """Generate the synthetic granules of ``product`` whose beams cross ``aoi`` in ``cycles``.

    ``aoi``: anything :func:`is2cloud.aoi.load_aoi` accepts (GeoJSON path, dict, polygon, bbox).
    ``cycles`` default to (3, 6). The result is a complete archive (same layout as the presets) in
    ``out_dir``, or in ``<cache>/archive/custom-<hash>`` when ``out_dir`` is None (reused when it
    exists). ``window``/``margin_m`` as in :func:`is2cloud.granules.orbit.plan_granules` (ATL03
    granules are shortened to the AOI +/- 2 km by default, ATL06 granules keep their whole region).
    Raises ValueError (naming the AOI and the cycles) when no granule crosses the AOI.
    """
    from is2cloud.aoi import load_aoi
    from is2cloud.settings import get_settings

    _refuse_in_generator_child()
    settings = get_settings()
    seed = settings.seed if seed is None else int(seed)
    bucket = bucket or settings.archive_bucket
    area = load_aoi(aoi)
    product = product.upper()
    cycles_t = tuple(sorted({int(c) for c in (cycles if cycles is not None else DEFAULT_SAMPLE_CYCLES)}))
    specs = orbit.plan_granules(area, product, cycles_t, window=window, margin_m=margin_m, seed=seed)
    if not specs:
        w, s, e, n = area.bounds
        raise ValueError(f"no {product} granule crosses the AOI {area.name!r} (bounds {w:.4f}, {s:.4f}, {e:.4f}, "
                         f"{n:.4f}) in cycles {list(cycles_t)}; try more cycles or a larger AOI")
    signature = hashlib.sha1(json.dumps([area.geometry.wkt, product, cycles_t, window, margin_m]).encode()
                             ).hexdigest()[:12]
    root = Path(out_dir) if out_dir is not None else (
        Path(cache_dir or settings.cache_dir) / "archive" / f"custom-{signature}")
    name = f"sample:{area.name}:{product}"
    description = f"{product} granules crossing AOI {area.name!r} in cycles {list(cycles_t)}"
    with _locked(root.parent / f".{root.name}.lock"):
        if not force and _is_current(root, seed=seed, signature=signature, bucket=bucket):
            return load_archive(root)
        return _build(root, specs, preset=name, seed=seed, signature=signature, description=description,
                      bucket=bucket, workers=workers, progress=progress)


# -- UMM-G -------------------------------------------------------------------------------------------------


def concept_id(name: str) -> str:
    digest = int(hashlib.md5(name.encode()).hexdigest()[:12], 16)
    return f"G{3_000_000_000 + digest % 900_000_000}-{PROVIDER}"


def _iso(delta_time: float) -> str:
    return orbit.delta_time_to_datetime(delta_time).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def footprint_polygons(footprints: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """Counter-clockwise closed rings around the swath (between the outer beams), split at the antimeridian."""
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    left = np.asarray(footprints["gt1l"], dtype="f8")
    right = np.asarray(footprints["gt3r"], dtype="f8")
    rings: list[list[tuple[float, float]]] = []
    breaks = np.flatnonzero((np.abs(np.diff(left[:, 0])) > 180) | (np.abs(np.diff(right[:, 0])) > 180)) + 1
    for piece in np.split(np.arange(left.shape[0]), breaks):
        if piece.size < 2:
            continue
        step = max(1, math.ceil(piece.size / 40))
        idx = np.unique(np.concatenate([piece[::step], piece[-1:]]))
        pts = np.concatenate([left[idx], right[idx][::-1]])
        poly = Polygon(pts)
        if not poly.is_valid:
            poly = poly.buffer(0)
        if poly.is_empty or poly.geom_type != "Polygon":
            poly = Polygon(pts).convex_hull
        ring = orient(poly, 1.0).exterior.coords
        rings.append([(round(x, 6), round(y, 6)) for x, y in ring])
    return rings


def umm_g(spec: GranuleSpec, *, size: int, md5: str, bucket: str, footprints: dict[str, Any],
          created: str) -> dict[str, Any]:
    """A UMM-G record like NSIDC's for one granule (``earthaccess.DataGranule(record, cloud_hosted=True)``)."""
    s3 = f"s3://{bucket}/{spec.key}"
    https = f"{HTTPS_ROOT}/{bucket}/{spec.key}"
    polygons = [{"Boundary": {"Points": [{"Longitude": x, "Latitude": y} for x, y in ring]}}
                for ring in footprint_polygons(footprints)]
    return {
        "meta": {
            "concept-type": "granule",
            "concept-id": concept_id(spec.name),
            "revision-id": 1,
            "native-id": spec.name,
            "collection-concept-id": COLLECTION_CONCEPT_IDS.get((spec.product, spec.release), f"C0-{PROVIDER}"),
            "provider-id": PROVIDER,
            "format": "application/vnd.nasa.cmr.umm+json",
            "revision-date": created,
            "is2cloud-synthetic": True,
        },
        "umm": {
            "GranuleUR": spec.name,
            "CollectionReference": {"ShortName": spec.product, "Version": spec.release},
            "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": _iso(spec.data_start_delta_time),
                                                 "EndingDateTime": _iso(spec.data_end_delta_time)}},
            "SpatialExtent": {"HorizontalSpatialDomain": {
                "Geometry": {"GPolygons": polygons},
                "Track": {"Cycle": spec.cycle, "Passes": [{"Pass": spec.rgt, "Tiles": [f"{spec.region:02d}"]}]},
            }},
            "OrbitCalculatedSpatialDomains": [{
                "OrbitNumber": spec.orbit_number, "BeginOrbitNumber": spec.orbit_number,
                "EndOrbitNumber": spec.orbit_number, "EquatorCrossingLongitude": round(spec.lan, 6),
                "EquatorCrossingDateTime": _iso(spec.node_delta_time)}],
            "DataGranule": {
                "ArchiveAndDistributionInformation": [{
                    "Name": spec.name, "SizeInBytes": int(size), "Size": round(size / 2**20, 6), "SizeUnit": "MB",
                    "Format": "HDF5", "MimeType": "application/x-hdf5",
                    "Checksum": {"Value": md5, "Algorithm": "MD5"}}],
                "DayNightFlag": "Unspecified",
                "Identifiers": [{"Identifier": spec.name, "IdentifierType": "ProducerGranuleId"}],
                "ProductionDateTime": created,
            },
            "RelatedUrls": [
                {"URL": https, "Type": "GET DATA", "Description": "Download " + spec.name, "Format": "HDF5",
                 "MimeType": "application/x-hdf5"},
                {"URL": s3, "Type": "GET DATA VIA DIRECT ACCESS",
                 "Description": "This link provides direct download access via S3 to the granule"},
                {"URL": S3_CREDENTIALS_URL, "Type": "VIEW RELATED INFORMATION",
                 "Description": "api endpoint to retrieve temporary credentials valid for same-region direct s3 "
                                "access"},
            ],
            "AdditionalAttributes": [{"Name": "is2cloud_synthetic", "Values": ["true"]},
                                     {"Name": "is2cloud_shortened", "Values": [str(spec.shortened).lower()]}],
            "ProviderDates": [{"Date": created, "Type": "Insert"}, {"Date": created, "Type": "Update"}],
            "MetadataSpecification": {"URL": "https://cdn.earthdata.nasa.gov/umm/granule/v1.6.6", "Name": "UMM-G",
                                      "Version": "1.6.6"},
        },
    }


__all__ = ["Archive", "PRESETS", "Preset", "Request", "generate_granule", "load_archive", "preset_specs",
           "publish_archive", "sample_data", "umm_g"]

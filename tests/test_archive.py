"""Sample archives: layout of docs/CONTRACTS.md, caching, staleness, atomicity, UMM-G records, presets."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import pytest

from is2cloud.granules import archive as arch
from is2cloud.granules import atl03 as atl03_module
from is2cloud.granules import orbit
from is2cloud.granules.archive import PRESETS, load_archive, preset_specs, publish_archive, sample_data
from is2cloud.granules.common import GENERATOR_VERSION

REPO = Path(__file__).resolve().parents[1]
BUCKET = "nsidc-cumulus-prod-protected"
KEY_RE = re.compile(r"^ATLAS/(ATL0[36])/006/(\d{4})/(\d{2})/(\d{2})/(ATL0[36]_(\d{4})(\d{2})(\d{2})\d{6}_\d{8}_006_\d{2}\.h5)"
                    r"(\.dmrpp)?$")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def test_preset(cache):
    return publish_archive("test", cache_dir=cache, seed=2018, bucket=BUCKET, workers=2)


def test_layout_follows_the_contract(test_preset, cache):
    a = test_preset
    assert a.root == cache / "archive" / "test"
    assert (a.root / ".complete").is_file() and (a.root / "manifest.json").is_file()
    m = json.loads((a.root / "manifest.json").read_text())
    for key in ("preset", "generator_version", "seed", "created", "generation_seconds", "objects", "products"):
        assert key in m, key
    assert m["preset"] == "test" and m["generator_version"] == GENERATOR_VERSION and m["seed"] == 2018
    assert m["generation_seconds"] > 0 and m["synthetic"] is True
    assert len(m["objects"]) == 8 and m["products"]["ATL06"]["granules"] == 2 and m["products"]["ATL03"]["granules"] == 2
    for o in m["objects"]:
        assert set(o) == {"bucket", "key", "size", "etag"} and o["bucket"] == BUCKET
        path = a.root / "objects" / o["bucket"] / o["key"]
        data = path.read_bytes()
        assert len(data) == o["size"] and hashlib.md5(data).hexdigest() == o["etag"]
        mk = KEY_RE.match(o["key"])
        assert mk, o["key"]
        assert mk.group(2, 3, 4) == mk.group(6, 7, 8)  # the date folders are the granule's start date
        assert a.path_of(o["key"]) == path
    # every granule has its DMR++ sidecar (NSIDC's flat style) under its key plus ".dmrpp", listed right after it
    keys = [o["key"] for o in m["objects"]]
    assert keys[1::2] == [k + ".dmrpp" for k in keys[0::2]] and not any(k.endswith(".dmrpp") for k in keys[0::2])
    for o in m["objects"][1::2]:
        text = (a.root / "objects" / o["bucket"] / o["key"]).read_text(encoding="latin-1")
        assert text.startswith("<?xml") and 'dmrpp:href="OPeNDAP_DMRpp_DATA_ACCESS_URL"' in text
        assert f'name="{o["key"].rsplit("/", 1)[1].removesuffix(".dmrpp")}"' in text and "<Group" not in text
    assert sorted(p.name for p in (a.root / "catalog").iterdir()) == ["ATL03_006.jsonl", "ATL06_006.jsonl"]
    assert a.keys == keys[0::2] and [o["key"] for o in a.granule_objects] == a.keys and a.objects == m["objects"]
    assert a.total_bytes == sum(o["size"] for o in m["objects"])
    assert "test" in str(a) and "4 granules" in str(a)


def test_test_preset_content(test_preset):
    orients = set()
    for o in test_preset.granule_objects:
        with h5py.File(test_preset.path_of(o["key"]), "r") as f:
            orients.add(int(f["orbit_info/sc_orient"][0]))
            assert f.attrs["is2cloud_synthetic"] == b"true" and f.attrs["is2cloud_shortened"] == b"true"
            assert f.attrs["is2cloud_seed"] == 2018
            name = o["key"].rsplit("/", 1)[1]
            assert f.attrs["identifier_product_name"].decode() == name
            if "/ATL03/" in o["key"]:
                assert f.attrs["is2cloud_surface_model"] == b"grandmesa" and int(f["orbit_info/rgt"][0]) == 295
            else:
                assert f.attrs["is2cloud_surface_model"] == b"greenland"
    assert orients == {0, 1}


def test_umm_g_records(test_preset):
    records = test_preset.umm_records()
    assert len(records) == 4  # granules only: the sidecars are objects, not granules
    by_name = {o["key"].rsplit("/", 1)[1]: o for o in test_preset.objects}
    for rec in records:
        umm, meta = rec["umm"], rec["meta"]
        name = umm["GranuleUR"]
        o = by_name[name]
        fields = orbit.parse_granule_name(name)
        assert umm["CollectionReference"] == {"ShortName": fields["product"], "Version": "006"}
        assert re.fullmatch(r"G\d{10}-NSIDC_CPRD", meta["concept-id"]) and meta["provider-id"] == "NSIDC_CPRD"
        assert meta["native-id"] == name and meta["collection-concept-id"].endswith("-NSIDC_CPRD")
        rng = umm["TemporalExtent"]["RangeDateTime"]
        assert rng["BeginningDateTime"] < rng["EndingDateTime"]
        assert rng["BeginningDateTime"][:10] == fields["start"].strftime("%Y-%m-%d")
        info = umm["DataGranule"]["ArchiveAndDistributionInformation"][0]
        assert info["SizeInBytes"] == o["size"] and info["Size"] == pytest.approx(o["size"] / 2**20)
        assert info["SizeUnit"] == "MB" and info["Checksum"]["Value"] == o["etag"]
        urls = {u["Type"]: u["URL"] for u in umm["RelatedUrls"]}
        assert urls["GET DATA VIA DIRECT ACCESS"] == f"s3://{BUCKET}/{o['key']}"
        assert urls["GET DATA"] == f"https://data.nsidc.earthdatacloud.nasa.gov/{BUCKET}/{o['key']}"
        hsd = umm["SpatialExtent"]["HorizontalSpatialDomain"]
        assert hsd["Track"]["Cycle"] == fields["cycle"] and hsd["Track"]["Passes"][0]["Pass"] == fields["rgt"]
        assert umm["OrbitCalculatedSpatialDomains"][0]["OrbitNumber"] > 0
        for gp in hsd["Geometry"]["GPolygons"]:
            pts = [(p["Longitude"], p["Latitude"]) for p in gp["Boundary"]["Points"]]
            assert pts[0] == pts[-1] and len(pts) >= 4
            area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]))
            assert area2 > 0, "UMM-G polygons are counter-clockwise"


def test_footprint_covers_the_data(test_preset):
    from shapely.geometry import Polygon, Point

    for rec in test_preset.umm_records("ATL06"):
        key = next(u["URL"] for u in rec["umm"]["RelatedUrls"] if u["Type"] == "GET DATA VIA DIRECT ACCESS")
        path = test_preset.path_of(key.split("/", 3)[3])
        polys = [Polygon([(p["Longitude"], p["Latitude"]) for p in gp["Boundary"]["Points"]])
                 for gp in rec["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"]]
        with h5py.File(path, "r") as f:
            lat = f["gt2l/land_ice_segments/latitude"][::50]
            lon = f["gt2l/land_ice_segments/longitude"][::50]
        inside = [any(p.buffer(1e-6).contains(Point(x, y)) for p in polys) for x, y in zip(lon, lat)]
        assert all(inside)


def test_cached_archive_is_reused_and_stale_one_regenerated(test_preset, cache, monkeypatch):
    created = test_preset.manifest["created"]
    again = publish_archive("test", cache_dir=cache, seed=2018, bucket=BUCKET)
    assert again.manifest["created"] == created  # cached
    # another generator version: regenerated
    manifest = json.loads((test_preset.root / "manifest.json").read_text())
    manifest["generator_version"] = "0.0.0-old"
    (test_preset.root / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(arch, "_default_workers", lambda: 2)
    fresh = publish_archive("test", cache_dir=cache, seed=2018, bucket=BUCKET)
    assert fresh.manifest["generator_version"] == GENERATOR_VERSION and fresh.manifest["created"] >= created
    assert fresh.keys == test_preset.keys and [o["etag"] for o in fresh.objects] == [o["etag"] for o in test_preset.objects]
    # a missing .complete marker also means "not there"
    (fresh.root / ".complete").unlink()
    with pytest.raises(FileNotFoundError):
        load_archive(fresh.root)
    assert publish_archive("test", cache_dir=cache, seed=2018, bucket=BUCKET).root == fresh.root
    assert (fresh.root / ".complete").exists()
    assert not list(cache.glob("archive/.test.tmp-*")) and not list(cache.glob("archive/.test.old-*"))


def test_failed_generation_leaves_no_archive(tmp_path, monkeypatch):
    calls = []

    def boom(args):
        calls.append(args[0].name)
        if len(calls) == 2:
            raise RuntimeError("disk full (simulated)")
        return real(args)

    real = arch._work
    monkeypatch.setattr(arch, "_work", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        publish_archive("test", cache_dir=tmp_path, seed=2018, bucket=BUCKET, workers=1)
    assert not (tmp_path / "archive" / "test").exists()
    assert not list((tmp_path / "archive").glob(".test.tmp-*"))


def test_other_seed_other_data(tmp_path, test_preset):
    a = publish_archive("test", cache_dir=tmp_path, seed=7, bucket=BUCKET, workers=2)
    assert a.keys == test_preset.keys  # same granules (geometry) ...
    assert [o["etag"] for o in a.objects] != [o["etag"] for o in test_preset.objects]  # ... other values


def test_preset_definitions():
    book = preset_specs("book", 2018)
    atl06 = [s for s in book if s.product == "ATL06"]
    atl03 = [s for s in book if s.product == "ATL03" and s.surface == "grandmesa"]
    long03 = [s for s in book if s.product == "ATL03" and s.surface != "grandmesa"]
    assert 15 <= len(atl06) <= 30 and 6 <= len(atl03) <= 12
    assert not any(s.shortened for s in atl06) and all(s.shortened for s in atl03)
    assert {s.sc_orient for s in atl06} == {0, 1} and {s.sc_orient for s in atl03} == {0, 1}
    years = {orbit.delta_time_to_datetime(s.start_delta_time).year for s in atl06}
    assert len(years) >= 3  # a time series over years
    assert {s.surface for s in atl06} == {"greenland"}
    # one long Greenland ATL03 granule (kerchunk's preparation costs): the track of an ATL06 granule, ~900 km
    assert [s.surface for s in long03] == ["greenland"] and long03[0].name.replace("ATL03", "ATL06") in {
        s.name for s in atl06}
    assert 800e3 < long03[0].window[1] - long03[0].window[0] <= atl03_module.MAX_WINDOW_M
    bench = preset_specs("bench", 2018)
    assert len(bench) >= 150 and {s.sc_orient for s in bench} == {0, 1}
    assert len({s.key for s in bench}) == len(bench)
    assert set(PRESETS) == {"test", "book", "bench"}
    with pytest.raises(ValueError, match="unknown archive preset"):
        publish_archive("huge")


def test_sample_data_for_any_aoi(tmp_path):
    out = tmp_path / "mesa"
    box = (-108.10, 38.98, -107.95, 39.05)  # the middle of Grand Mesa
    a = sample_data(box, "ATL03", cycles=[4], out_dir=out, seed=3, workers=1, bucket=BUCKET, margin_m=0.0)
    assert a.root == out and (out / ".complete").exists()
    specs = orbit.plan_granules(box, "ATL03", [4], margin_m=0.0)
    assert specs and sorted(a.keys) == sorted(s.key for s in specs)
    assert len(a.umm_records("ATL03")) == len(specs)
    with h5py.File(a.path_of(a.keys[0]), "r") as f:
        assert f.attrs["is2cloud_surface_model"] == b"grandmesa" and f.attrs["is2cloud_seed"] == 3
    assert sample_data(box, "ATL03", cycles=[4], out_dir=out, seed=3, bucket=BUCKET,
                       margin_m=0.0).manifest["created"] == a.manifest["created"]
    with pytest.raises(ValueError, match="no ATL06 granule crosses"):
        # a 200 m box on the equator between two ground tracks of cycle 4
        sample_data((-170.0137, -0.001, -170.0117, 0.001), "ATL06", cycles=[4], out_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="unknown product"):
        sample_data(REPO / "data" / "grandmesa.geojson", "ATL08", cycles=[4], out_dir=tmp_path / "x")


def test_generation_reports_progress_while_it_waits(tmp_path, monkeypatch, capsys):
    """Each finished granule is counted at once, and while none finishes the line repeats with the elapsed
    time (a log such as `make book`'s never goes quiet); all of it on stderr, named after the archive."""
    from functools import partial

    from is2cloud.progress import Progress

    monkeypatch.setattr(arch, "Progress", partial(Progress, interval=0.5))
    box = (-108.10, 38.98, -107.95, 39.05)
    a = sample_data(box, "ATL03", cycles=[3, 4], out_dir=tmp_path / "mesa", seed=3, workers=2, bucket=BUCKET,
                    margin_m=0.0, progress=True)
    n = len(a.granule_objects)
    assert n >= 2, "the check needs the process pool (two granules or more)"
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == "" and lines, out
    parsed = [re.fullmatch(r"archive 'sample:.+:ATL03': granules (\d+)/(\d+) done, ([\d.]+) s", line)
              for line in lines]
    assert all(parsed), lines
    done = [int(m[1]) for m in parsed]
    elapsed = [float(m[3]) for m in parsed]
    assert {int(m[2]) for m in parsed} == {n} and done[0] == 0 and done[-1] == n, lines
    assert done == sorted(done) and elapsed == sorted(elapsed), lines
    assert len(lines) > len(set(done)), f"no line while waiting for a granule: {lines}"

"""bench: measure's bookkeeping, compare's table and sentence, the server's cost per request."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from is2cloud.bench import Measurement, append_result, compare, load_results, measure

REPO = Path(__file__).resolve().parents[1]


def _m(name: str, wall: float, gets: int, nbytes: float, **kw) -> Measurement:
    base = dict(mode="local", scale="book", profile="in-region", cpu_s=1.0, peak_rss_MB=100.0, granules=28,
                rows=1000, physical_bytes=10e6, lower_bound_s=0.5, concurrency=8, cores=2)
    base.update(kw)
    return Measurement(name, wall_s=wall, gets=gets, get_bytes=int(nbytes), **base)


def test_measure_reads_rows_and_granules_from_the_result(tmp_path):
    frame = pd.DataFrame({"granule": ["a", "a", "b"], "h_li": [1.0, 2.0, 3.0]})
    with measure("x", results=tmp_path / "m.csv", physical_bytes=123) as m:
        m.result = frame
    assert (m.rows, m.granules, m.physical_bytes) == (3, 2, 123)
    with measure("y", results=tmp_path / "m.csv", granules=5) as m2:
        m2.result = frame
    assert (m2.rows, m2.granules) == (3, 5)  # given values win
    table = load_results(tmp_path / "m.csv")
    assert list(table["name"]) == ["x", "y"] and "result" not in table.columns


def test_the_lower_bound_adds_the_uploads_that_follow_the_reads():
    from is2cloud.bench import lower_bound

    reads = lower_bound(100, 50_000_000, 0.03, 100e6, 10)
    assert reads == pytest.approx(10 * 0.03 + 0.05)
    # one 15 MB PUT after the reads: its latency and its bytes through one connection
    assert lower_bound(100, 50_000_000, 0.03, 100e6, 10, uploads=1, upload_bytes=15_000_000) == \
        pytest.approx(reads + 0.03 + 0.15)
    # two parts at once
    assert lower_bound(100, 50_000_000, 0.03, 100e6, 10, uploads=2, upload_bytes=16_000_000,
                       upload_concurrency=2) == pytest.approx(reads + 0.03 + 0.08)


def test_measure_counts_the_output_written_after_the_reads_in_the_lower_bound(archive_cloud, test_archive, tmp_path):
    """A PUT that follows the GETs (a subset's GeoParquet) is in the bound; one before them is not."""
    from is2cloud import bench

    obj = test_archive.objects[0]
    fs = archive_cloud.credentials().s3fs()
    out = f"{archive_cloud.buckets[0]}/bench/lower-bound"
    archive_cloud.set_profile("in-region")
    try:
        with measure("read then write", cloud=archive_cloud, results=tmp_path / "m.csv") as m:
            fs.pipe_file(f"{out}/before", b"x" * 1_000_000)  # not from what is read: may overlap the reads
            fs.cat_file(f"{obj['bucket']}/{obj['key']}", start=0, end=4096)
            fs.pipe({f"{out}/after-1": b"y" * 1_000_000, f"{out}/after-2": b"z" * 1_000_000})  # both at once
    finally:
        archive_cloud.set_profile("none")
    ledger = [r for r in archive_cloud.ledger() if r.verb == "PUT" and "/after-" in r.key]
    assert bench.peak_concurrency([(r.start_s, r.start_s + r.duration_s) for r in ledger]) == 2
    # the reads went one at a time: the two uploads in flight after them do not divide their bound
    assert m.gets == 1 and m.upload_bytes == 2_000_000 and m.concurrency == 1
    reads = m.latency_s + 4096 / (m.bandwidth_MBps * 1e6)
    assert m.lower_bound_s == pytest.approx(reads + m.latency_s + 2_000_000 / (m.bandwidth_MBps * 1e6 * 2))
    assert "2.00 MB written after the reads" in str(m)
    assert load_results(tmp_path / "m.csv")["upload_bytes"].tolist() == [2_000_000]


def test_results_written_by_another_version_keep_every_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("name,wall_s\nold,1.5\n")
    append_result(_m("new", 2.0, 1, 1), path)
    table = pd.read_csv(path)
    assert list(table["name"]) == ["old", "new"] and table["wall_s"].tolist() == [1.5, 2.0]


def test_compare_says_what_was_measured_on_what():
    base = _m("baseline (tuned)", 40.0, 393, 1600e6)
    fast = _m("chunk index", 2.5, 915, 10.3e6)
    build = _m("chunk index build", 57.5, 197, 1600e6)
    c = compare(base, fast, preparations={"chunk index": build})
    assert "16.0x faster" in c.sentence and "1.03x against 160.0x the physical limit" in c.sentence
    assert "pays for itself after 2 queries" in c.sentence
    assert "28 synthetic v006 granules, 2 CPU cores" in c.sentence and "'in-region'" in c.sentence
    assert list(c.table.index) == ["baseline (tuned)", "chunk index"]
    assert "x physical limit" in c.styled.to_html()
    assert len(c.chart()) == 4
    slow = compare(fast, base)
    assert "16.0x slower" in slow.sentence
    quick = compare(base, fast, preparations={"chunk index": _m("chunk index build", 17.5, 197, 1600e6)})
    assert "pays for itself on the first query" in quick.sentence


def test_compare_refuses_what_is_not_comparable():
    with pytest.raises(ValueError, match="different scales"):
        compare(_m("a", 1, 1, 1), _m("b", 1, 1, 1, scale="bench"))
    with pytest.raises(ValueError, match="not compared"):
        compare(_m("a", 1, 1, 1), preparations={"b": _m("b", 1, 1, 1)})
    with pytest.raises(ValueError, match="at least one"):
        compare()


def test_server_cost_suite_measures_the_servers_cpu_per_get(archive_cloud, test_archive, tmp_path):
    from is2cloud.localcloud.cost import benchmark

    [m] = benchmark("test", archive_cloud, test_archive, requests=300, results=tmp_path / "b.csv")
    assert m.gets == 300 and m.server_cpu_s is not None and m.server_cpu_s > 0
    assert "server CPU per ranged GET" in m.notes and archive_cloud.profile_name == "none"


def test_readme_figures_come_from_the_kept_results(tmp_path):
    from is2cloud.bench import figures_markdown, merge_results

    a = pd.DataFrame([_m("baseline (tuned)", 40.0, 393, 1600e6).as_row() | {"suite": "baseline", "commit": "abc"},
                      _m("chunk index", 2.5, 915, 10.3e6, notes="14.0x faster").as_row()
                      | {"suite": "chunkindex", "commit": "abc"}])
    b = pd.DataFrame([_m("baseline (tuned)", 38.0, 393, 1600e6).as_row() | {"suite": "baseline", "commit": "def"}])
    merged = merge_results(a, b)
    assert sorted(merged["wall_s"]) == [2.5, 38.0]  # baseline's book run replaced, chunk index kept
    text = figures_markdown(merged)
    assert "**baseline, book scale**: `.venv/bin/is2cloud bench --suite baseline --scale book`, at def" in text
    assert "| chunk index | 2.50 |" in text and "- chunk index: 14.0x faster" in text
    assert text.index("**baseline") < text.index("**chunkindex")


def test_the_readme_figures_are_generated_not_typed():
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_figures", repo / "scripts" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (repo / "README.md").read_text()
    assert module.render(readme) == readme, "README.md's figures differ from docs/bench-results.csv: run make readme-figures"


def test_gets_by_object_counts_gets_per_kind_of_key():
    from types import SimpleNamespace as R

    from is2cloud.bench import gets_by_object, ledger_of

    rows = [R(verb="GET", key="a/x.h5", bytes=100), R(verb="GET", key="a/x.h5.dmrpp", bytes=10),
            R(verb="HEAD", key="a/x.h5", bytes=0), R(verb="GET", key="store/ref", bytes=1),
            R(verb="GET", key="a/y.h5", bytes=50)]
    table = gets_by_object(rows, {"sidecar": ".dmrpp", "granule": ".h5"})
    assert table.loc["granule"].tolist() == [2, 150 / 1e6]
    assert table.loc["sidecar"].tolist() == [1, 10 / 1e6]
    assert table.loc["other"].tolist() == [1, 1 / 1e6]
    with ledger_of(None) as got:  # earthdata mode: no ledger
        pass
    assert got == []


def test_ledger_plot_by_order_shows_each_read_side_by_side():
    import holoviews as hv

    from is2cloud.bench import ledger_plot
    from is2cloud.localcloud import Request

    def get(seq, start, n, t):
        return Request(seq=seq, verb="GET", bucket="b", key="k/x.h5", range_start=start, range_end=start + n - 1,
                       bytes=n, status=206, start_s=t, duration_s=0.1)

    naive = [get(1, 0, 5_000_000, 0.0), get(2, 2_000_000, 5_000_000, 0.2), get(3, 0, 5_000_000, 0.4)]
    tuned = [get(4, 0, 4_000_000, 1.0), get(5, 4_000_000, 3_000_000, 1.1),
             Request(seq=6, verb="HEAD", bucket="b", key="k/x.h5", range_start=None, range_end=None, bytes=0,
                     status=200, start_s=1.2, duration_s=0.0)]
    layout = ledger_plot({"naive": naive, "tuned": tuned}, x="order")
    panels = list(layout)
    assert isinstance(layout, hv.Layout) and len(panels) == 2
    assert [p.opts.get().kwargs["title"] for p in panels] == ["naive: 3 GETs, 15.0 MB", "tuned: 2 GETs, 7.0 MB"]
    assert panels[0].dframe()["request"].tolist() == [1, 2, 3]           # GETs in the order sent; the HEAD is left out
    assert panels[1].dframe()["end_MB"].tolist() == [4.0, 7.0]
    assert isinstance(ledger_plot(naive), hv.NdOverlay)                  # the default: points over time
    with pytest.raises(ValueError, match="'seconds' or 'order'"):
        ledger_plot(naive, x="time")


@pytest.fixture()
def reference(archive_cloud, creds, granules, tmp_path):
    """``tuned_baseline`` on the test archive's Greenland granules, results in a fresh table."""
    from is2cloud.methods.baseline import tuned_baseline
    from is2cloud.settings import get_settings

    def run(chosen=granules, **kw):
        kw.setdefault("by", "test")
        return tuned_baseline(chosen, REPO / "data" / "greenland_aoi.geojson", cloud=archive_cloud,
                              out=get_settings().output_url("test-bench/baseline.parquet"), credentials=creds,
                              out_credentials=creds, client="sync", results=tmp_path / "m.csv", **kw)
    return run


def test_tuned_baseline_is_reused_within_a_build(reference, granules, tmp_path):
    from is2cloud.bench import load_results, rows_dir
    from is2cloud.methods import assert_same_rows

    first = reference(by="notebook 03b", physical_bytes=123)
    assert first.origin.startswith("measured now") and first.name == "baseline (tuned) -> GeoParquet"
    assert len(list(rows_dir(tmp_path / "m.csv").glob("*.parquet"))) == 1
    again = reference(by="notebook 07")
    assert again.origin.startswith(f"reused from notebook 03b's run at {first.timestamp[11:19]} UTC")
    assert (again.wall_s, again.gets, again.get_bytes, again.rows, again.physical_bytes) == \
        (first.wall_s, first.gets, first.get_bytes, first.rows, 123)
    assert_same_rows(first.result, again.result, names=("measured", "reused"))
    assert again.result.attrs == {}
    assert "reused from notebook 03b" in str(again)
    assert len(load_results(tmp_path / "m.csv")) == 1          # the reused measurement is not recorded twice
    assert reference(reuse=False).origin.startswith("measured now")


def test_tuned_baseline_is_measured_again_for_other_granules_commit_or_build(reference, granules, tmp_path,
                                                                           monkeypatch):
    from is2cloud import bench

    assert len(granules) >= 2, "the test archive should hold two Greenland ATL06 granules"
    reference()
    other = reference(granules[:1])
    assert other.origin.startswith("measured now") and other.granules == 1
    monkeypatch.setattr(bench, "_commit", lambda: "0000000+")
    assert reference().origin.startswith("measured now")           # another commit
    (tmp_path / "m.csv").unlink()                                  # make book clears the table: another build
    assert reference().origin.startswith("measured now")
    monkeypatch.setattr(bench, "_commit", lambda: "")              # outside git: nothing to match, nothing kept
    (tmp_path / "m.csv").unlink()
    outside = reference()
    assert outside.origin == "measured now" and reference().origin == "measured now"

def test_peak_memory_is_the_whole_process_tree_sampled_together(archive_cloud, tmp_path):
    """A child holding 200 MB and the embedded server are both in peak_rss_MB (one sum per sample)."""
    import subprocess
    import sys
    import time

    import psutil

    hold = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(30)"
    with measure("tree", cloud=archive_cloud, results=tmp_path / "m.csv") as m:
        child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline().strip() == b"1"
            child_rss = psutil.Process(child.pid).memory_info().rss
            time.sleep(0.3)  # a few samples while the child holds its memory
        finally:
            child.kill()
            child.wait()
    me = psutil.Process().memory_info().rss
    server = psutil.Process(archive_cloud._proc.pid).memory_info().rss
    assert child_rss > 200e6
    assert m.server_peak_rss_MB is not None and m.server_peak_rss_MB > 0.5 * server / 1e6
    assert m.peak_rss_MB * 1e6 > 0.9 * (me + server) + child_rss
    # without the server: this process and its child, and less than the whole tree by about the server
    assert m.client_peak_rss_MB is not None and m.client_peak_rss_MB * 1e6 > 0.9 * me + child_rss
    assert m.client_peak_rss_MB < m.peak_rss_MB - 0.5 * server / 1e6


def test_stash_gives_back_the_frame_it_was_given():
    import geopandas as gpd
    import numpy as np

    from is2cloud.bench import Stash
    from is2cloud.methods.schema import canonical_frame

    frame = canonical_frame({"time": np.array(["2019-03-12T00:00:00"], "datetime64[ns]"), "latitude": [70.0],
                             "longitude": [-45.0], "h_li": [np.float32(3.4028235e38)], "h_li_sigma": [0.1],
                             "atl06_quality_summary": [0], "track_id": ["gt1l"], "rgt": [1], "cycle": [3],
                             "segment_id": [7], "granule": ["g.h5"]})
    with Stash() as stash:
        stash.put("a", frame)
        assert "a" in stash and "b" not in stash
        back = stash.get("a")
        directory = stash._dir.name
    assert isinstance(back, gpd.GeoDataFrame) and back.dtypes.equals(frame.dtypes) and back.equals(frame)
    import os

    assert not os.path.exists(directory)  # nothing left on disk


def test_ledger_plot_without_a_ledger_says_why_on_aws_and_fails_locally(monkeypatch):
    """Earthdata mode has no ledger: a note instead of a plot; locally an empty ledger is an error."""
    from types import SimpleNamespace

    from is2cloud import bench

    with pytest.raises(ValueError, match="no GET"):
        bench.ledger_plot({"original": []})
    monkeypatch.setattr(bench, "get_settings", lambda: SimpleNamespace(mode="earthdata"))
    note = bench.ledger_plot({"original": []})
    assert "No request ledger on AWS" in note.data


def test_each_suite_runs_on_fresh_dask_workers(monkeypatch, tmp_path):
    """What a suite's Dask workers keep (caches, heap they do not give back) must not count in the next
    suite's peak memory: run_suites closes the shared local cluster after every suite."""
    import sys
    import types
    from types import SimpleNamespace

    from is2cloud import bench, parallel

    closed: list[str] = []
    found: list[object] = []

    class Client:
        status = "running"

        def __init__(self, name: str):
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    def suite():
        found.append(parallel._local.get("client"))
        parallel._local["client"] = Client(f"suite {len(found)}'s")
        return []

    class Cloud:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    mod = types.ModuleType("is2cloud_fake_suites")
    mod.suite = suite
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(parallel, "_local", {})
    for name in ("first", "second"):
        monkeypatch.setitem(bench.SUITES, name, f"{mod.__name__}:suite")
    monkeypatch.setattr("is2cloud.granules.publish_archive", lambda scale, cache_dir: SimpleNamespace(root=tmp_path))
    monkeypatch.setattr("is2cloud.localcloud.LocalCloud", lambda **kw: Cloud())
    bench.run_suites(["first", "second"], ["test"], results=tmp_path / "bench.csv")
    assert found == [None, None], "a suite ran on the workers of the suite before it"
    assert closed == ["suite 1's", "suite 2's"]


def test_a_method_is_measured_without_the_baselines_frame_or_idle_workers(archive_cloud, tmp_path, monkeypatch):
    """The virtual methods' suite (methodbench) compares the method's rows with the tuned baseline's at the
    end: the baseline's frame waits on disk, not in memory, while the method is measured, and the shared
    cluster the baseline ran on is closed then (the method's subset runs in this process). The baseline
    runs on fresh workers, not on those the prepare step used."""
    import gc
    import weakref

    from is2cloud import parallel
    from is2cloud.methods import baseline, methodbench
    from is2cloud.methods.kerchunk import refs

    made: list[weakref.ref] = []
    clients: dict[str, object] = {}
    tuned = baseline.bench_tuned_run

    def tuned_run(scene, *args, **kwargs):
        clients["baseline"] = scene.client
        m = tuned(scene, *args, **kwargs)
        made.append(weakref.ref(m.result))
        return m

    def prepare(granules, **kwargs):
        clients["prepare"] = kwargs["client"]
        return refs.prepare(granules, mode="overwrite", **kwargs)

    seen: dict[str, object] = {}

    def subset(prepared, area, **kwargs):
        gc.collect()
        seen["baseline's frame"] = [r() is not None for r in made]
        seen["cluster"] = parallel._local.get("client")
        return refs.subset(prepared, area, **kwargs)

    monkeypatch.setattr(baseline, "bench_tuned_run", tuned_run)
    out = methodbench.run("kerchunk", "kerchunk references", "test", archive_cloud, subset=subset,
                          prepare=prepare, profile="none", results=tmp_path / "bench.csv")
    assert seen == {"baseline's frame": [False], "cluster": None}
    assert clients["baseline"] is not clients["prepare"], "the baseline ran on the workers the prepare used"
    assert [m.name for m in out] == ["kerchunk references prepare", "baseline (tuned) -> GeoParquet",
                                     "kerchunk references -> GeoParquet"]
    assert all(m.result is None for m in out)


def test_several_suites_run_each_in_a_process_of_its_own(monkeypatch, tmp_path):
    """What one suite's process keeps (heap, caches) must not count in the next one's peak memory: `is2cloud
    bench` with several suites or scales runs each (scale, suite) in its own process, appending to one CSV."""
    import subprocess
    import sys

    from is2cloud import cli

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    out = tmp_path / "bench.csv"
    assert cli.main(["bench", "--suite", "baseline,virtual", "--scale", "test,book", "--out", str(out)]) == 0
    assert [(c[c.index("--scale") + 1], c[c.index("--suite") + 1]) for c in calls] == [
        ("test", "baseline"), ("test", "virtual"), ("book", "baseline"), ("book", "virtual")]
    assert all(c[:4] == [sys.executable, "-m", "is2cloud.cli", "bench"] and c[-3:] == ["--out", str(out), "--append"]
               for c in calls)
    calls.clear()
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 2)
    assert cli.main(["bench", "--suite", "baseline,virtual", "--scale", "test", "--out", str(out), "--overwrite"]) == 2
    assert len(calls) == 1  # a suite that failed stops the run

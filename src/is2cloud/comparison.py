"""The comparison chapter's measurements and pictures: every method of the registry on the same granules
and AOI, in one run, with its one-time preparation beside its per-query cost.

>>> runs = run_methods(granules, aoi, cloud=cloud)            # doctest: +SKIP
>>> cost_table(runs); query_chart(runs); break_even_chart(runs)  # doctest: +SKIP

Every method is run through the protocol (:mod:`is2cloud.methods.protocol`): ``prepare`` (measured,
when the method has something to prepare) then ``subset`` to a GeoParquet file in the output bucket
(measured), and its rows are checked identical to the first method's (the baseline). Published numbers
(:func:`is2cloud.bench.published_timings`) are never mixed into these tables: :func:`published_chart`
draws them on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

from is2cloud.bench import Measurement, append_result, measure, published_timings

__all__ = ["MethodRun", "break_even_chart", "break_even_queries", "bytes_chart", "cost_table", "published_chart",
           "query_chart", "run_methods"]


@dataclass
class MethodRun:
    """One method's run: its preparation (None when it has none), its query, what it stores."""

    method: ModuleType
    prepare: Measurement | None
    query: Measurement
    stored_bytes: int

    @property
    def title(self) -> str:
        return str(self.method.TITLE)


def run_methods(granules: Sequence[Any], aoi: Any, *, cloud: Any = None, credentials: Any = None,
                out_credentials: Any = None, client: Any = None, methods: Sequence[ModuleType] | None = None,
                physical_bytes: int | None = None, out_prefix: str | None = None,
                notes: str = "") -> list[MethodRun]:
    """Prepare and query every method (default :func:`is2cloud.methods.available`, in book order) on
    ``granules`` and ``aoi``; each query ends with its GeoParquet file under ``out_prefix`` (default
    ``s3://<output bucket>/comparison``). Raises ``AssertionError`` (from ``assert_same_rows``, saying how)
    when a method's rows differ from the first method's."""
    from is2cloud.access import get_credentials
    from is2cloud.geoparquet import write_geoparquet
    from is2cloud.methods import available
    from is2cloud.methods.identity import assert_same_rows
    from is2cloud.settings import get_settings

    credentials = credentials if credentials is not None else get_credentials("read")
    out_credentials = out_credentials if out_credentials is not None else get_credentials("write")
    out_prefix = (out_prefix or f"s3://{get_settings().output_bucket}/comparison").rstrip("/")
    keywords = {"credentials": credentials, "out_credentials": out_credentials, "client": client}
    runs: list[MethodRun] = []
    for method in methods if methods is not None else available():
        with measure(f"{method.TITLE}: prepare", method=method.NAME, cloud=cloud, granules=len(granules),
                     notes=notes, record=False) as prep:
            prepared = method.prepare(granules, **keywords)
        if prepared is not None:  # a method with nothing to prepare has no preparation to record
            append_result(prep)
        with measure(f"{method.TITLE}: query -> GeoParquet", method=method.NAME, cloud=cloud,
                     granules=len(granules), physical_bytes=physical_bytes, notes=notes) as query:
            query.result = method.subset(prepared if prepared is not None else granules, aoi, **keywords)
            write_geoparquet(query.result, f"{out_prefix}/{method.NAME}.parquet", credentials=out_credentials)
        if runs:
            assert_same_rows(runs[0].query.result, query.result, names=(runs[0].title, method.TITLE))
        runs.append(MethodRun(method, prep if prepared is not None else None, query,
                              int(getattr(prepared, "nbytes", 0) or 0)))
    return runs


def break_even_queries(run: MethodRun, reference: MethodRun) -> float:
    """How many queries it takes for ``run``'s preparation to pay for itself against ``reference``
    (0 with nothing to prepare; ``inf`` when its queries are not faster)."""
    prep = run.prepare.wall_s if run.prepare else 0.0
    if prep == 0:
        return 0.0
    saved = reference.query.wall_s - run.query.wall_s
    return math.ceil(prep / saved) if saved > 0 else math.inf


def cost_table(runs: Sequence[MethodRun]):  # -> pandas Styler
    """One row per method: preparation (total, per granule, GETs, MB read, MB stored) and query (wall, CPU,
    S3 server CPU, GETs, MB, x physical limit, network lower bound), and the break-even."""
    import pandas as pd

    ref = runs[0]
    rows = []
    for r in runs:
        p, q = r.prepare, r.query
        rows.append({
            "method": r.title,
            "prepare (s)": p.wall_s if p else 0.0,
            "prepare per granule (s)": p.wall_s / p.granules if p and p.granules else 0.0,
            "prepare GETs": p.gets if p else 0,
            "prepare MB read": (p.get_bytes or 0) / 1e6 if p else 0.0,
            "stored MB": r.stored_bytes / 1e6,
            "query (s)": q.wall_s, "query CPU (s)": q.cpu_s, "S3 server CPU (s)": q.server_cpu_s,
            "query GETs": q.gets, "query MB": None if q.get_bytes is None else q.get_bytes / 1e6,
            "x physical limit": q.bytes_ratio, "network lower bound (s)": q.lower_bound_s,
            "pays off after (queries)": break_even_queries(r, ref),
        })
    frame = pd.DataFrame(rows).set_index("method").dropna(axis="columns", how="all")
    fmt = {c: "{:,.2f}" for c in frame.columns}
    fmt.update({c: "{:,.0f}" for c in ("prepare GETs", "query GETs") if c in frame})
    fmt["pays off after (queries)"] = lambda v: "-" if v == 0 else ("never" if math.isinf(v) else f"{v:.0f}")
    return frame.style.format(fmt, na_rep="-")


def _frame(runs: Sequence[MethodRun]):  # -> pandas.DataFrame
    import pandas as pd

    return pd.DataFrame([{"method": r.title, "query_s": r.query.wall_s,
                          "MB": None if r.query.get_bytes is None else r.query.get_bytes / 1e6,
                          "prepare_s": r.prepare.wall_s if r.prepare else 0.0} for r in runs])


def _label(runs: Sequence[MethodRun]) -> str:
    q = runs[0].query
    data = "synthetic v006 granules" if q.mode == "local" else "NASA granules"
    return f"{q.granules} {data}, data scale '{q.scale}', network profile '{q.profile}', {q.cores} CPU cores"


def query_chart(runs: Sequence[MethodRun]):  # -> holoviews object
    """Per-query wall time of every method, log scale."""
    import hvplot.pandas  # noqa: F401

    frame = _frame(runs)
    return frame.hvplot.bar(x="method", y="query_s", logy=True, rot=20, xlabel="", ylabel="seconds (log)",
                            ylim=_log_range(frame["query_s"]), width=720, height=320,
                            title=f"One query to GeoParquet ({_label(runs)})")


def _log_range(values: Any) -> tuple[float, float]:
    """Axis limits for bars on a log scale (whose base would otherwise be 0)."""
    v = [float(x) for x in values if x and x > 0]
    return (min(v) / 3, max(v) * 3) if v else (0.01, 1.0)


def bytes_chart(runs: Sequence[MethodRun]):  # -> holoviews object
    """Bytes fetched against wall time, one point per method (log-log)."""
    import hvplot.pandas  # noqa: F401

    frame = _frame(runs).dropna(subset=["MB"])
    points = frame.hvplot.scatter(x="MB", y="query_s", by="method", logx=True, logy=True, size=120,
                                  xlabel="MB fetched (log)", ylabel="seconds (log)", width=720, height=380,
                                  title=f"Bytes against time, one query ({_label(runs)})")
    return points * frame.hvplot.labels(x="MB", y="query_s", text="method", text_baseline="bottom", logx=True,
                                        logy=True)


def break_even_chart(runs: Sequence[MethodRun], queries: int | None = None):  # -> holoviews object
    """Total time (preparation + n queries) against the number of queries n, one line per method: where a
    line crosses the baseline's, its preparation has paid for itself."""
    import pandas as pd
    import hvplot.pandas  # noqa: F401

    finite = [b for b in (break_even_queries(r, runs[0]) for r in runs) if 0 < b < math.inf]
    n_max = queries or max(5, int(1.5 * max(finite, default=4)))
    rows = [{"queries": n, "method": r.title,
             "total_s": (r.prepare.wall_s if r.prepare else 0.0) + n * r.query.wall_s}
            for r in runs for n in range(0, n_max + 1)]
    return pd.DataFrame(rows).hvplot.line(x="queries", y="total_s", by="method", xlabel="number of queries",
                                          ylabel="total seconds (preparation + queries)", width=720, height=380,
                                          title=f"When does preparing pay off? ({_label(runs)})")


def published_chart(scope: str | None = None):  # -> holoviews object
    """The published numbers (real granules, in AWS; not measured here), on their own chart."""
    import hvplot.pandas  # noqa: F401

    table = published_timings()
    if scope:
        table = table[table["scope"].str.contains(scope, case=False)]
    table = table.assign(what=table["measurement"] + ": " + table["method"])
    return table.hvplot.barh(x="what", y="value_s", logx=True, xlabel="", ylabel="seconds (log), published",
                             ylim=_log_range(table["value_s"]),
                             title="Published numbers (real NASA granules; not measured in this build)",
                             width=720, height=40 * len(table) + 120)

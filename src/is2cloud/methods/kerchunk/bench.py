"""The kerchunk benchmark: make the references, record the preparation costs of one granule per
product (and of the archive's long ATL03 granule), then subset with the tuned baseline and the references."""

from __future__ import annotations

import os
from typing import Any

from is2cloud.methods.kerchunk.refs import prepare, subset


def cost_granules(first: Any, archive: Any) -> list[tuple[Any, list[tuple[str, str | None]]]]:
    """The granules whose preparation costs the benchmark measures, each with its configurations:
    ``first`` (an ATL06 granule) and the first Grand Mesa ATL03 granule with every configuration, and
    the first Greenland ATL03 granule (the ``book`` archive's long one) without "no cache", whose tens
    of thousands of one-after-the-other GETs would take most of an hour there (the small granules show
    that row). An archive without ATL03 granules (``bench``) gives ``first`` alone."""
    from is2cloud.catalog import NoGranulesError, find_granules
    from is2cloud.granules.archive import REPO_DATA
    from is2cloud.methods.kerchunk.costs import COST_CONFIGS

    picks = [(first, list(COST_CONFIGS))]
    for aoi_file, configs in (("grandmesa.geojson", list(COST_CONFIGS)),
                              ("greenland_aoi.geojson", [c for c in COST_CONFIGS if c[1] != "none"])):
        try:
            picks += [(g, configs) for g in find_granules(REPO_DATA / aoi_file, "ATL03", archive=archive)[:1]]
        except NoGranulesError:
            pass
    return picks


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI (``profile`` network model): ``kerchunk
    references prepare`` (block cache, into ``s3://<output bucket>/bench/kerchunk-<scale>``), the
    preparation cost rows of :func:`~is2cloud.methods.kerchunk.costs.preparation_costs` for the granules
    of :func:`cost_granules`, then ``repeat`` times the tuned baseline and ``kerchunk references ->
    GeoParquet``, rows checked identical (:func:`is2cloud.methods.methodbench.run`)."""
    from is2cloud.bench import append_result
    from is2cloud.granules.archive import publish_archive
    from is2cloud.methods import methodbench
    from is2cloud.methods.kerchunk.costs import preparation_costs
    from is2cloud.settings import get_settings

    def prep(granules: Any, **kw: Any) -> Any:
        return prepare(granules, mode="overwrite", **kw)

    def costs(scene: Any, prepared: Any) -> list:
        archive = publish_archive(scale, cache_dir=get_settings().cache_dir)
        out = []
        for g, configs in cost_granules(scene.granules[0], archive):
            table = preparation_costs(g, credentials=scene.credentials, cloud=cloud, configs=configs, scale=scale,
                                      floor=True)
            for m in table.attrs["measurements"]:
                append_result(m, results)
                out.append(m)
        return out

    return methodbench.run("kerchunk", "kerchunk references", scale, cloud, prepare=prep, subset=subset, aoi=aoi,
                           profile=profile, client=client, repeat=repeat, results=results, extra=costs)

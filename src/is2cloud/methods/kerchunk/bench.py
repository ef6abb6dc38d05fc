"""The kerchunk benchmark: make the references, record the preparation costs of one granule per
product, then subset with the tuned baseline and the references."""

from __future__ import annotations

import os
from typing import Any

from is2cloud.methods.kerchunk.refs import prepare, subset


def benchmark(scale: str, cloud: Any, *, aoi: Any = None, profile: str = "in-region", client: Any = None,
              repeat: int = 1, results: str | os.PathLike[str] | None = None) -> list:  # -> list[bench.Measurement]
    """Measure, in one run at ``scale`` on the Greenland AOI (``profile`` network model): ``kerchunk
    references prepare`` (block cache, into ``s3://<output bucket>/bench/kerchunk-<scale>``), the
    preparation cost rows of :func:`~is2cloud.methods.kerchunk.costs.preparation_costs` for the first
    ATL06 granule and the first ATL03 granule of the archive, then ``repeat`` times the tuned baseline and
    ``kerchunk references -> GeoParquet``, rows checked identical (:func:`is2cloud.methods.methodbench.run`)."""
    from is2cloud.bench import append_result
    from is2cloud.catalog import NoGranulesError, find_granules
    from is2cloud.granules.archive import REPO_DATA, publish_archive
    from is2cloud.methods import methodbench
    from is2cloud.methods.kerchunk.costs import preparation_costs
    from is2cloud.settings import get_settings

    def prep(granules: Any, **kw: Any) -> Any:
        return prepare(granules, mode="overwrite", **kw)

    def costs(scene: Any, prepared: Any) -> list:
        archive = publish_archive(scale, cache_dir=get_settings().cache_dir)
        picks = [scene.granules[0]]
        try:  # and one ATL03 granule, where the archive has some (the bench archive has none)
            picks += find_granules(REPO_DATA / "grandmesa.geojson", "ATL03", archive=archive)[:1]
        except NoGranulesError:
            pass
        out = []
        for g in picks:
            table = preparation_costs(g, credentials=scene.credentials, cloud=cloud, scale=scale, floor=True)
            for m in table.attrs["measurements"]:
                append_result(m, results)
                out.append(m)
        return out

    return methodbench.run("kerchunk", "kerchunk references", scale, cloud, prepare=prep, subset=subset, aoi=aoi,
                           profile=profile, client=client, repeat=repeat, results=results, extra=costs)

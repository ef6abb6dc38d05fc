"""Direct calls in the rehearsal's pod (``python probe.py``): prints one JSON object of findings.

* ``count``: ``find_granules(Greenland, "ATL06", count=1)`` and every match, by name;
* ``failed_upload``: notebook 02's request with its output in the read-only NSIDC bucket, which the
  server cannot write: the error raised, or the value returned.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    from is2cloud import sliderule as sr
    from is2cloud.access import get_credentials
    from is2cloud.aoi import load_aoi
    from is2cloud.catalog import find_granules
    from is2cloud.settings import get_settings

    out: dict[str, object] = {}
    greenland = REPO / "data" / "greenland_aoi.geojson"
    out["count"] = [g["umm"]["GranuleUR"] for g in find_granules(greenland, "ATL06", count=1)]
    out["all"] = [g["umm"]["GranuleUR"] for g in find_granules(greenland, "ATL06")]
    poly = load_aoi(REPO / "data" / "grandmesa.geojson").sliderule_poly()
    url = f"s3://{get_settings().archive_bucket}/{get_settings().output_key('grandmesa.parquet')}"
    parms = sr.tutorial_parms(poly, output={"path": url, "format": "geoparquet", "open_on_complete": False,
                                            "credentials": get_credentials("write").sliderule_output()})
    try:
        out["failed_upload"] = {"returned": repr(sr.atl06p(parms))}
    except sr.SlideRuleError as exc:
        out["failed_upload"] = {"raised": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Execute notebooks with nbclient, each in its own kernel, in this process's environment.

``python run_notebooks.py OUT_DIR NOTEBOOK...``: writes each executed notebook to OUT_DIR (also when a
cell fails, with the error in its outputs) and ``OUT_DIR/status.json`` (notebook -> "ok" or the error).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(out_dir: str, *notebooks: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict[str, object]] = {}
    for path in map(Path, notebooks):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
        t0 = time.perf_counter()
        try:
            client.execute()
            result = "ok"
        except CellExecutionError as exc:
            result = str(exc)[-3000:]
        status[path.name] = {"result": result, "seconds": round(time.perf_counter() - t0, 1)}
        nbformat.write(nb, out / path.name)
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return 0 if all(s["result"] == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

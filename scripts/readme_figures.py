"""Regenerate the README's figure tables from the measurements, so that no figure in it is typed by hand.

    .venv/bin/python scripts/readme_figures.py --add results/bench.csv   # after `make bench`: keep its runs
    .venv/bin/python scripts/readme_figures.py --check                   # README matches docs/bench-results.csv?

``--add`` merges a results CSV into ``docs/bench-results.csv`` (the measurements the README shows, kept in
git: every (suite, scale) it measured replaces the earlier rows of the same suite and scale); then the
README's section between the markers is rewritten from that file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from is2cloud.bench import FIGURES_BEGIN, FIGURES_END, figures_markdown, load_results, merge_results

REPO = Path(__file__).resolve().parents[1]
KEPT = REPO / "docs" / "bench-results.csv"
README = REPO / "README.md"


def render(readme: str, kept: Path = KEPT) -> str:
    """``readme`` with its generated section rewritten from ``kept``."""
    if FIGURES_BEGIN not in readme or FIGURES_END not in readme:
        raise SystemExit(f"README.md has no generated section: add the lines\n{FIGURES_BEGIN}\n{FIGURES_END}")
    head, rest = readme.split(FIGURES_BEGIN, 1)
    _, tail = rest.split(FIGURES_END, 1)
    return f"{head}{FIGURES_BEGIN}\n\n{figures_markdown(load_results(kept))}\n{FIGURES_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--add", type=Path, help="a results CSV (e.g. results/bench.csv) to merge in first")
    ap.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = ap.parse_args(argv)
    if args.add:
        if not args.add.exists():
            raise SystemExit(f"{args.add} does not exist: run `make bench` first")
        merged = merge_results(load_results(KEPT), load_results(args.add))
        merged.to_csv(KEPT, index=False)
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's figures differ from docs/bench-results.csv: run scripts/readme_figures.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    print(f"README.md figures regenerated from {KEPT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

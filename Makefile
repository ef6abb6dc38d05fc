# The two commands: `make book` and `make test`. Each sets up its own environment (.venv, from uv.lock).
VENV   := .venv
PY     := $(VENV)/bin/python
export IS2CLOUD_MODE ?= local

.PHONY: env test book bench readme-figures archive clean lock

env:
	@bash scripts/bootstrap.sh

## make test: the whole test suite (unit, integration against the embedded local cloud, notebooks)
test: env
	$(PY) -m pytest -q

## make book: execute every notebook against the embedded local cloud and build _build/html
book: env
	$(PY) -m is2cloud.cli sample-data --preset book
	rm -rf results/measurements.csv results/measurements.rows
	$(VENV)/bin/jupyter-book build . --all -W --keep-going || { cat _build/html/reports/*.log 2>/dev/null; exit 1; }

## make bench: performance figures (book and bench scale, in-region profile) -> results/bench.csv
bench: env
	$(PY) -m is2cloud.cli bench

## make readme-figures: keep results/bench.csv's runs in docs/bench-results.csv and regenerate the README's tables
readme-figures: env
	$(PY) scripts/readme_figures.py --add results/bench.csv

archive: env
	$(PY) -m is2cloud.cli sample-data --preset book

lock: env
	$$(command -v uv || echo .tools/bin/uv) lock --python $$(bash -c 'ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 | tail -1')

clean:
	rm -rf _build .pytest_cache

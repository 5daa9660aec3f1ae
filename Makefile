# recs: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECS := $(VENV)/bin/recs
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: setup setup-gpu demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned first so that pip takes the CPU wheel on this disk, not a CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,serve]"
	touch $(STAMP)

# GPU machines: replace the CPU twins (same module names) with the GPU builds.
setup-gpu: $(STAMP)
	$(PY) -m pip uninstall --yes faiss-cpu onnxruntime
	$(PY) -m pip install --quiet -e ".[gpu]"

demo: $(STAMP)
	$(RECS) data demo --out $(DEMO)/shop --seed 0
	$(RECS) data validate $(DEMO)/shop/items.csv $(DEMO)/shop/events.csv $(DEMO)/shop/bundles.csv
	$(RECS) data profile --data $(DEMO)/shop --user $$($(PY) -c "import polars as pl; print(pl.read_csv('$(DEMO)/shop/events.csv')['user_id'][0])")
	$(RECS) evaluate --data $(DEMO)/shop --model popularity,repeat,cooc,als,bm25 --k 10,50 --out $(DEMO)/baselines.json

test: $(STAMP)
	$(VENV)/bin/ruff check recs tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check recs tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/baselines.py

clean:
	rm -rf $(VENV) build

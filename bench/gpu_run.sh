#!/usr/bin/env bash
# The GPU benchmark as one command on the GPU machine (no internet: nothing is downloaded).
#   bash bench/gpu_run.sh                  # bench/gpu.py with its defaults (<= 8 min on an H100 / H200)
#   bash bench/gpu_run.sh --objects 1 16   # any bench/gpu.py arguments
#   bash bench/gpu_run.sh --quick          # <= 9 min in all on an H100 / H200 (a borrowed GPU's short minutes):
#       40 frames at 1 / 4 / 16 objects, in this order while the 430 s budget lasts (a variant that no longer
#       fits is recorded as skipped): ours eager fp32 (the masks' reference), compile + CUDA graphs bf16 (cold
#       warm-up, then a warm start of a second process from our compile cache), EdgeTAM's eager fp32 (its rows'
#       reference) and compile + CUDA graphs bf16 (issue 20: EdgeTAM >= 2x tiny's frames/s on the same GPU and
#       backend: the "model ratio" lines), Meta's vos_optimized (1 object, 120 s budget with its compilation),
#       ours eager bf16, Meta's plain bf16, EdgeTAM eager bf16; memory attention alone (--attention); no tests.
#       Further arguments are added to these.
# Both modes measure EdgeTAM beside sam2.1_hiera_tiny (bench/gpu.py's default variants include its rows).
# Then the tests marked gpu (at most 4 min) when pytest imports. Writes $OUT/gpu.json (rewritten after every
# variant: a run cut short still reports), $OUT/gpu.log and $OUT/gpu_tests.log ($OUT defaults to out/); exits
# with the benchmark's status, or the tests' when they fail.
# Meta's predictor runs only when `sam2` imports: carry gpu_wheels/ (the device tool's carry: ["gpu_wheels"]),
# built beforehand on the development machine by bench/gpu_wheels.sh: Meta's side (sam2==1.1.0 without its
# CUDA extension, hydra-core==1.3.2, omegaconf==2.3.0, antlr4-python3-runtime==4.9.3, iopath==0.1.10), plus
# PyYAML, Pillow, numpy, tqdm, portalocker, packaging and pytest (with pluggy, iniconfig) in case the machine
# lacks them; ~25 MiB, under the 64 MiB carry limit. Each wheel is installed from that folder, into a temporary
# directory put on PYTHONPATH, only when its module does not already import.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = "--quick" ]; then
    shift
    QUICK=1
    set -- --frames 40 --objects 1 4 16 --budget-s 430 --vos-budget-s 120 --warm-start --attention \
        --variants ours-eager-fp32 ours-compile-cg-bf16 edgetam:ours-eager-fp32 edgetam:ours-compile-cg-bf16 \
        meta-vos-bf16 ours-eager-bf16 meta-plain-bf16 edgetam:ours-eager-bf16 "$@"
fi
PY=${PY:-python3}
OUT=${OUT:-out}
mkdir -p "$OUT"
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
missing=()
if [ -d gpu_wheels ]; then
    for pair in sam2:sam2 hydra:hydra-core omegaconf:omegaconf antlr4:antlr4-python3-runtime iopath:iopath \
                yaml:PyYAML PIL:pillow numpy:numpy tqdm:tqdm portalocker:portalocker packaging:packaging \
                pytest:pytest pluggy:pluggy iniconfig:iniconfig; do
        "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing from gpu_wheels/: ${missing[*]}"
        "$PY" -m pip install --quiet --no-index --no-deps --find-links gpu_wheels --target "$SITE" "${missing[@]}"
    fi
else
    echo "no gpu_wheels/ (bench/gpu_wheels.sh builds it): Meta's predictor runs only if sam2 is installed"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export PYTHONPATH=".:$SITE${PYTHONPATH:+:$PYTHONPATH}"
set +e
"$PY" bench/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
status=${PIPESTATUS[0]}
if [ "$QUICK" = 1 ]; then
    echo "--quick: the tests marked gpu did not run" | tee "$OUT/gpu_tests.log"
elif "$PY" -c "import pytest" 2>/dev/null; then
    timeout 240 "$PY" -m pytest -m gpu -q -rs tests/test_fixed_shapes.py tests/test_engines.py 2>&1 \
        | tee "$OUT/gpu_tests.log"
    tests=${PIPESTATUS[0]}
    [ "$status" -ne 0 ] || status=$tests
else
    echo "pytest does not import: the tests marked gpu did not run" | tee "$OUT/gpu_tests.log"
fi
exit "$status"

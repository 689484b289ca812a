#!/usr/bin/env bash
# Builds gpu_wheels/ (git-ignored) on the development machine: the wheels bench/gpu_run.sh may install on the
# GPU machine, which has no internet (Python 3.12, torch 2.11 cu130, Triton; no TensorRT). Carry it with the
# working tree (the device tool's carry: ["gpu_wheels"]); the total carried must stay under 64 MiB (~25 MiB).
#   - Meta's side (DESIGN.md "The GPU path"): sam2==1.1.0 built without its CUDA extension, antlr4, iopath
#     (pure Python, built here), hydra-core, omegaconf;
#   - what the GPU machine may lack: PyYAML, Pillow, numpy, tqdm, portalocker, packaging (cp312 manylinux
#     wheels), and pytest with pluggy and iniconfig, to run the tests marked gpu there.
# gpu_run.sh installs only those whose module does not import there.
#   bash bench/gpu_wheels.sh            # uses .venv/bin/python (PY=... to choose another)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf gpu_wheels && mkdir gpu_wheels
SAM2_BUILD_CUDA=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w gpu_wheels \
    sam2==1.1.0 antlr4-python3-runtime==4.9.3 iopath==0.1.10
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d gpu_wheels \
    hydra-core==1.3.2 omegaconf==2.3.0 PyYAML pillow numpy tqdm portalocker packaging pytest pluggy iniconfig
ls -l gpu_wheels && du -sh gpu_wheels

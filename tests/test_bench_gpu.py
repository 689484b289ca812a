"""bench/gpu.py, the prepared GPU benchmark, runs end to end at CI size on the CPU (`--device cpu --smoke`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_variant_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--device", "cpu", "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {(run["variant"], run["objects"]): run for run in report["runs"]}
    # ours eager (the reference), ours compiled, and Meta's predictor (the test extra installs sam2)
    assert set(runs) == {(variant, n) for variant in ("ours eager", "ours compile", "meta") for n in (1, 2)}
    for run in runs.values():
        assert run["status"] == "ok", run
        assert run["fps"] > 0 and run["iou_min"] is not None
    for n in (1, 2):
        assert runs["ours eager", n]["iou_min"] == 1.0
        assert runs["ours compile", n]["compiled_after_warmup"] == 0 and runs["ours compile", n]["warmup_s"] > 0
        assert set(runs["ours compile", n]["component_ms"]) == {
            "encode_image", "attend_memory", "decode_tracked", "encode_memory"}
        # same weights and pixels: Meta's masks are ours
        assert runs["meta", n]["iou_min"] > 0.99
    assert report["env"]["sam2"] and report["env"]["device"] == "cpu"
    # the table comes last: header, separator, one line per run
    last_lines = done.stdout.strip().splitlines()[-8:]
    assert last_lines[0].startswith("| variant |") and all(line.startswith("|") for line in last_lines)


@pytest.mark.slow
def test_gpu_benchmark_cameras_mode_runs_on_cpu(tmp_path: Path) -> None:
    """`--cameras`: our variants tracking 1 and 2 streams together, warmed up for 2 (nothing compiled after)."""
    out = tmp_path / "cameras.json"
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--device", "cpu", "--smoke", "--cameras", "1", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = json.loads(out.read_text())["cameras"]
    assert {(line["variant"], line["cameras"]) for line in lines} == {
        (variant, k) for variant in ("ours eager", "ours compile") for k in (1, 2)}
    for line in lines:
        assert line["status"] == "ok" and line["fps"] > 0 and line["compiled_after_warmup"] == 0, line
        assert line["fps_vs_one_camera"] == 1.0 if line["cameras"] == 1 else line["fps_vs_one_camera"] > 0
    assert done.stdout.strip().splitlines()[-1].startswith("goals: ")

"""Warm starts that survive a reboot: inductor's compiled artifacts kept in our cache (sam2_rt.runtime.compile_cache).

A second process whose torch caches are empty (a fresh temporary directory, as after a reboot) loads the
artifacts the first one saved, and compiles nothing from scratch. Bad entries are rebuilt with one warning.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import torch

from sam2_rt.runtime import compile_cache
from sam2_rt.runtime.compile_cache import CompileCache

REPO = Path(__file__).resolve().parents[1]

# One process: an inductor tracker at 64 px with one bucket, warmed up; prints what its warm-up did.
WARMUP = """
import json, torch
from sam2_rt.weights.checkpoint import random_model
from sam2_rt import Tracker, TrackerConfig
tracker = Tracker(random_model("sam2.1_hiera_tiny", 64), TrackerConfig(max_objects=1, backend="compile"))
report = tracker.warmup()
counters = torch._dynamo.utils.counters["inductor"]
print("RESULT " + json.dumps(dict(actions=[event.action for event in report.events],
                                  hits=counters["fxgraph_cache_hit"], misses=counters["fxgraph_cache_miss"])))
"""


def warm_up_in_a_process(cache: Path, torch_tmp: Path) -> dict:
    """A process after a boot: an empty temporary directory (torch's default caches live there)."""
    torch_tmp.mkdir()
    env = {name: value for name, value in os.environ.items()
           if name not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env.update(SAM2_RT_CACHE=str(cache), TMPDIR=str(torch_tmp), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", WARMUP], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_a_second_process_after_a_reboot_loads_every_graph_and_compiles_nothing(tmp_path: Path) -> None:
    cold = warm_up_in_a_process(tmp_path / "sam2_rt", tmp_path / "boot1")
    # image encoder, memory attention (masked and steady state), decoder, memory encoder: all compiled
    assert cold["actions"] == ["compiled"] * 5 and cold["misses"] >= 5
    entries = sorted(path.name for path in (tmp_path / "sam2_rt" / "compile").iterdir())
    assert len(entries) == 2 and entries[0] == "inductor" and entries[1].startswith("sam2.1_hiera_tiny-64-fp32-")
    # the compiled kernels are in our cache dir (only g++'s precompiled headers stay in the temporary directory)
    assert any(path.suffix == ".so" for path in (tmp_path / "sam2_rt" / "compile" / "inductor").rglob("*"))
    warm = warm_up_in_a_process(tmp_path / "sam2_rt", tmp_path / "boot2")
    assert warm["actions"] == ["loaded"] * 5
    assert warm["misses"] == 0 and warm["hits"] >= 5


# --------------------------------------------------------------------------- the cache file


class FakeTorchCaches:
    """Stands in for torch.compiler's save / load of cache artifacts."""

    def __init__(self, payload: Optional[bytes] = b"artifacts of a warm-up", refuse: bool = False) -> None:
        self.payload = payload
        self.refuse = refuse
        self.loaded: List[bytes] = []

    def save(self) -> Optional[Tuple[bytes, object]]:
        return None if self.payload is None else (self.payload, object())

    def load(self, payload: bytes) -> None:
        if self.refuse:
            raise RuntimeError("artifacts of another torch")
        self.loaded.append(payload)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTorchCaches:
    caches = FakeTorchCaches()
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", caches.save)
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", caches.load)
    return caches


KEY = dict(model="sam2.1_hiera_tiny", image_size=128, precision="bf16", torch="2.14.1", plan=dict(rows=[1, 2]))


def test_saved_artifacts_load_in_the_next_process_with_the_same_key(tmp_path: Path, fake: FakeTorchCaches) -> None:
    path = CompileCache(tmp_path, KEY).save()
    assert path is not None and path.name.startswith("sam2.1_hiera_tiny-128-bf16-")
    cache = CompileCache(tmp_path, dict(KEY))
    assert cache.load() and cache.loaded and fake.loaded == [b"artifacts of a warm-up"]
    # another key (e.g. torch upgraded): another file, nothing to load
    assert not CompileCache(tmp_path, dict(KEY, torch="2.15.0")).load()


def test_nothing_compiled_saves_nothing(tmp_path: Path, fake: FakeTorchCaches) -> None:
    fake.payload = None
    assert CompileCache(tmp_path, KEY).save() is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["corrupt", "not ours", "refused", "other key"])
def test_a_bad_entry_is_removed_with_one_warning_and_rebuilt(
    tmp_path: Path, fake: FakeTorchCaches, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cache = CompileCache(tmp_path, KEY)
    path = cache.save()
    assert path is not None
    data = path.read_bytes()
    if damage == "corrupt":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "not ours":
        path.write_bytes(b"PK\x03\x04 a zip file")
    elif damage == "refused":
        fake.refuse = True
    else:  # a file of this name written for another key (a format change in the key's serialisation)
        other = CompileCache(tmp_path, dict(KEY, torch="2.15.0"))
        other.path = path
        other.save()
    with caplog.at_level(logging.WARNING, logger=compile_cache.__name__):
        assert not CompileCache(tmp_path, KEY).load()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "compiling from scratch" in warnings[0].getMessage()
    assert not path.exists()
    fake.refuse = False
    assert CompileCache(tmp_path, KEY).save() == path  # the warm-up writes a new one


def test_only_inductor_keeps_artifacts_and_eager_compilers_touch_no_cache(tmp_path: Path) -> None:
    from sam2_rt.runtime.backends import compiled_runner
    from sam2_rt.weights.checkpoint import random_model

    model = random_model("sam2.1_hiera_tiny", 64)
    runner = compiled_runner(model, (1,), compiler="eager", cache_dir=tmp_path)
    runner.prepare(runner.serve_streams(1))
    runner.finish_warmup()
    assert runner.cache is None and list(tmp_path.iterdir()) == []
    inductor = compiled_runner(model, (1,), compiler="inductor", cache_dir=tmp_path, precision="bf16")
    key = inductor.cache_key(inductor.serve_streams(1))
    assert key["precision"] == "bf16" and key["compiler"] == "inductor" and key["plan"]["steady"] == [1]
    assert len(key["weights_sha256"]) == 64 and key["torch"] == torch.__version__


def test_inductor_caches_go_to_ours_while_compiling_unless_the_user_chose_a_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with compile_cache.kept_inductor_caches(tmp_path / "ours") as kept:
        assert kept == tmp_path / "ours" and cache_dir() == str(tmp_path / "ours")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users"))
    with compile_cache.kept_inductor_caches(tmp_path / "ours") as kept:
        assert kept is None and cache_dir() == str(tmp_path / "users")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "users")

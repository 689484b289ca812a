"""Failure paths of the library and the CLI: the engine cache rebuilds only stale entries, and `sam2-rt track`
answers bad values, too many objects for an overlay and a video cut short with a clear error and status."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List

import pytest
import torch
from media import clip, write_video

from sam2_rt.cli import commands as cli

from sam2_rt.runtime import engines
from sam2_rt.io.overlay import MAX_OVERLAY_OBJECTS
from sam2_rt.io.video import open_source

MODEL_ARGS = ["--random-weights", "--image-size", "64", "--device", "cpu", "--quiet"]


# --------------------------------------------------------------------------- the engine cache


def engine_key() -> engines.EngineKey:
    return engines.EngineKey(model="sam2.1_hiera_tiny", weights_sha256="ab" * 32, image_size=128, precision="fp32",
                             component="memory_encoder", bucket=2, inputs=("torch.float32[2, 256, 8, 8]",),
                             torch="2.x", torch_tensorrt="2.x", tensorrt="10.x", gpu="none")


class Build:
    """A build that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> engines.SerializedEngine:
        self.calls += 1
        return engines.SerializedEngine(b"fresh engine", ("input_0",), ("output_0",))


def cached_entry(tmp_path: Path) -> engines.EngineCache:
    cache = engines.EngineCache(tmp_path)
    cache.write(engine_key(), engines.SerializedEngine(b"good engine", ("input_0",), ("output_0",)))
    return cache


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA driver version is insufficient for CUDA runtime version"),
    OSError("No space left on device"),
], ids=["out-of-memory", "cuda-error", "driver", "os-error"])
def test_a_load_error_that_is_not_the_entry_s_fault_propagates_and_keeps_the_entry(
    tmp_path: Path, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cached_entry(tmp_path)
    before = cache.path(engine_key()).read_bytes()
    build = Build()

    def load(engine: engines.SerializedEngine) -> bytes:
        raise error

    with pytest.raises(type(error)):
        engines.cached_engine(cache, engine_key(), build, load)
    assert build.calls == 0 and cache.path(engine_key()).read_bytes() == before
    assert not [r for r in caplog.records if "rebuilding" in r.getMessage()]


@pytest.mark.parametrize("message", [
    "Unable to deserialize the TensorRT engine",
    "[TensorRT] ERROR: The engine plan file is incompatible with this version of TensorRT, expecting library "
    "version 10.3 got 10.1",
    "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match",
])
def test_an_entry_tensorrt_cannot_deserialise_is_rebuilt(tmp_path: Path, message: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cache = cached_entry(tmp_path)
    build = Build()

    def load(engine: engines.SerializedEngine) -> bytes:
        if engine.payload != b"fresh engine":
            raise RuntimeError(message)
        return engine.payload

    with caplog.at_level(logging.WARNING, logger="sam2_rt.runtime.engines"):
        loaded, action = engines.cached_engine(cache, engine_key(), build, load)
    assert (loaded, action, build.calls) == (b"fresh engine", "rebuilt", 1)
    assert cache.read(engine_key()).payload == b"fresh engine"
    assert [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]


# --------------------------------------------------------------------------- sam2-rt track


def stderr_lines(capsys: pytest.CaptureFixture) -> List[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("score", ["nan", "-0.1", "1.5"])
def test_a_detection_min_score_outside_0_1_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            score: str) -> None:
    video = write_video(tmp_path / "clip.avi", clip(2))
    status = cli.main(["track", str(video), "--detections", str(tmp_path / "d.json"),
                       "--detection-min-score", score, *MODEL_ARGS])
    lines = stderr_lines(capsys)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith("sam2-rt track: error: argument --detection-min-score") and "0..1" in lines[0]


def test_more_objects_than_the_overlay_draws_with_output_is_one_line_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    video = write_video(tmp_path / "clip.avi", clip(2))
    status = cli.main(["track", str(video), "--point", "32,32", "--output", str(tmp_path / "o.mp4"),
                       "--max-objects", str(MAX_OVERLAY_OBJECTS + 1), *MODEL_ARGS])
    lines = stderr_lines(capsys)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0] == (f"sam2-rt track: error: --output draws at most {MAX_OVERLAY_OBJECTS} objects, and "
                        f"--max-objects is {MAX_OVERLAY_OBJECTS + 1}: lower --max-objects, or write --masks / "
                        "--json instead")


def cut_video(tmp_path: Path) -> Path:
    """A 12-frame video cut at 70 % of its bytes (as a copy interrupted mid-way leaves it)."""
    whole = write_video(tmp_path / "whole.avi", clip(12))
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    return cut


def test_a_video_that_ends_before_its_declared_frame_count_is_reported(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sam2_rt.io.video"), open_source(str(cut_video(tmp_path))) as source:
        read = sum(1 for _ in source)
    assert source.num_frames == 12 and 0 < read < 12 and source.ended_early
    warnings = [r.getMessage() for r in caplog.records if r.name == "sam2_rt.io.video"]
    assert warnings == [f"{source.name}: the video ended after {read} of the 12 frames it declares (the file is "
                        f"cut short or damaged): the last {12 - read} were not read"]
    with open_source(str(write_video(tmp_path / "whole.avi", clip(12)))) as whole:
        assert sum(1 for _ in whole) == 12 and not whole.ended_early


def test_track_of_a_video_cut_short_tracks_what_there_is_warns_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    json_path = tmp_path / "tracks.jsonl"
    status = cli.main(["track", str(cut_video(tmp_path)), "--point", "32,32", "--json", str(json_path),
                       *MODEL_ARGS])
    err = capsys.readouterr().err
    frames = len(json_path.read_text().splitlines())
    assert status == 1 and 0 < frames < 12
    assert f"WARNING: {tmp_path / 'cut.avi'}: the video ended after {frames} of the 12 frames it declares" in err
    assert "Traceback" not in err

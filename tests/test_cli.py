"""`sam2-rt` CLI: track a video file into JSON lines + label PNGs; bench; clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam2_rt import cli


def write_video(path: Path, frames: int = 3, height: int = 96, width: int = 128) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    assert writer.isOpened()
    for bgr in cli.synthetic_frames(height, width, frames):
        writer.write(bgr)
    writer.release()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_track_prints_a_line_per_frame_and_writes_label_pngs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "clip.avi"
    write_video(video)
    masks = tmp_path / "masks"
    rc = cli.main([
        "track", str(video), "--random-weights", "--image-size", "256", "--device", "cpu",
        "--click", "40,40", "--box", "10,10,60,50", "--masks-dir", str(masks),
    ])
    assert rc == 0
    lines = json_lines(capsys.readouterr().out)
    frames, summary = lines[:-1], lines[-1]
    assert [f["frame"] for f in frames] == [0, 1, 2]
    assert all([o["id"] for o in f["objects"]] == [1, 2] for f in frames)
    assert summary["summary"] and summary["frames"] == 3 and summary["objects"] == 2
    pngs = sorted(masks.glob("*.png"))
    assert [p.name for p in pngs] == ["000000.png", "000001.png", "000002.png"]
    label = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (96, 128) and label.dtype == np.uint16
    assert set(np.unique(label)) <= {0, 1, 2}


def test_bench_reports_a_summary(capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["bench", "--random-weights", "--image-size", "256", "--device", "cpu", "--objects", "2",
                   "--frames", "2", "--height", "64", "--width", "80"])
    assert rc == 0
    summary = json_lines(capsys.readouterr().out)[-1]
    assert summary["frames"] == 2 and summary["objects"] == 2 and summary["state_bytes"] > 0


def test_out_of_frame_click_is_a_clear_error_not_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, frames=1)
    rc = cli.main(["track", str(video), "--random-weights", "--image-size", "256", "--device", "cpu",
                   "--click", "500,20"])
    assert rc == 2
    assert any("outside" in r.message or "out of" in r.message for r in caplog.records), [r.message for r in caplog.records]


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, frames=1)
    rc = cli.main(["track", str(video), "--checkpoint", str(tmp_path / "nope.pt"), "--image-size", "256",
                   "--device", "cpu", "--click", "5,5"])
    assert rc == 2
    assert any("not found" in r.message for r in caplog.records)


def test_bad_click_syntax_is_rejected_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["track", "v.mp4", "--click", "1,2,3"])

"""`sam2-rt`: track videos, image folders and rosbag2 recordings into overlay videos, label PNGs, JSON Lines
and rosbag2 recordings, with prompts on the command line and in prompt files; `download --list`; one-line
errors with a non-zero exit status.

The tracker runs the tiny model at image size 128 with seeded random weights whose object-score bias is
raised (`visible_objects`): with plain random weights every object is "absent" and every mask empty, so the
outputs would test nothing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import cv2
import numpy as np
import pytest
import torch

from media import (
    BAG_FRAME_ID,
    HEIGHT,
    WIDTH,
    clip,
    disc_centre,
    square_centre,
    stamp_ns,
    write_bag,
    write_folder,
    write_video,
)
from sam2_rt.cli import bench, commands as cli, download as download_command
from sam2_rt.cli.loop import make_tracker, track_frames
from sam2_rt.cli.parser import build_parser
from sam2_rt.io.prompts import command_line_schedule
from sam2_rt.io.synthetic import SyntheticClip
from sam2_rt.io.track_outputs import JsonLines
from sam2_rt.modeling.config import MODEL_NAMES, get_config
from sam2_rt.tracking.memory import MemoryBank
from sam2_rt.weights import loading as runtime
from sam2_rt.weights.checkpoint import CHECKPOINTS, Manifest, sha256_file

MODEL_ARGS = ["--random-weights", "--image-size", "128", "--device", "cpu", "--quiet"]
# Frame 0 centres of the clip's square and disc (tests/media.py).
SQUARE, DISC = "32,32", "40,70"
OBJECT_SCORE_SHIFT = 4.0


@pytest.fixture(autouse=True)
def visible_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights whose objects are present (object score shifted up), so masks are not empty."""
    random_model = runtime.random_model

    def with_visible_objects(*args, **kwargs):
        model = random_model(*args, **kwargs)
        with torch.no_grad():
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += OBJECT_SCORE_SHIFT
        return model

    monkeypatch.setattr(runtime, "random_model", with_visible_objects)


def track(*args: str) -> int:
    return cli.main(["track", *args, *MODEL_ARGS])


def json_lines(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids_per_frame(records: List[dict]) -> List[List[int]]:
    return [[o["id"] for o in record["objects"]] for record in records]


def video_frames(path: Path) -> List[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr)
    capture.release()
    return frames


def test_track_video_writes_overlay_label_pngs_and_json_for_every_frame(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    video = write_video(tmp_path / "clip.avi", clip(6))
    out = tmp_path / "out"
    rc = track(str(video), "--point", f"{SQUARE}@1", "--point", f"{DISC}@2", "--output", str(out / "o.mp4"),
               "--masks", str(out / "masks"), "--json", str(out / "t.jsonl"))
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["summary"] and summary["frames"] == 6 and summary["objects"] == [1, 2]

    overlay = video_frames(out / "o.mp4")
    assert len(overlay) == 6 and overlay[0].shape == (HEIGHT, WIDTH, 3)
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    labels = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs]
    assert all(label.dtype == np.uint16 and label.shape == (HEIGHT, WIDTH) for label in labels)
    assert set(np.unique(np.stack(labels)).tolist()) == {0, 1, 2}
    records = json_lines(out / "t.jsonl")
    assert [r["frame"] for r in records] == list(range(6))
    assert [r["time"] for r in records] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert ids_per_frame(records) == [[1, 2]] * 6
    # The JSON areas are the masks' sizes: where masks do not overlap they add up to the label pixels.
    for record, label in zip(records, labels):
        assert sum(o["area"] for o in record["objects"]) >= np.count_nonzero(label)
        assert all(o["state"] == "tracking" for o in record["objects"])


def test_track_with_edgetam_on_random_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--model edgetam tracks like the SAM 2 models; its stream holds EdgeTAM's bank of (512, 64) token slots."""
    video = write_video(tmp_path / "clip.avi", clip(3))
    rc = cli.main(["track", str(video), "--point", f"{SQUARE}@1", "--box", "28,58,54,82@2", "--model", "edgetam",
                   "--image-size", "256", "--random-weights", "--device", "cpu", "--max-objects", "2", "--quiet",
                   "--json", str(tmp_path / "t.jsonl"), "--masks", str(tmp_path / "masks")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["frames"] == 3 and summary["objects"] == [1, 2] and summary["image_size"] == 256
    bank = MemoryBank.for_model(get_config("edgetam", 256), capacity=2, num_conditioning=4, device=torch.device("meta"))
    assert summary["state_bytes"] == bank.nbytes()
    records = json_lines(tmp_path / "t.jsonl")
    assert ids_per_frame(records) == [[1, 2]] * 3
    assert all(o["state"] == "tracking" for record in records for o in record["objects"])
    labels = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / "masks").glob("*.png"))]
    assert len(labels) == 3 and all(label.shape == (HEIGHT, WIDTH) for label in labels)
    assert set(np.unique(np.stack(labels)).tolist()) == {0, 1, 2}


PROMPTS_YAML = """\
prompts:
  - {frame: 0, object: 1, points: [[32, 32]]}
  - {frame: 2, object: 2, box: [28, 58, 54, 82]}
  - {frame: 3, action: refine, object: 1, points: [[38, 32], [60, 70]], labels: [1, 0]}
  - {frame: 4, action: remove, object: 1}
  - {time: 0.45, object: 3, points: [[100, 20]]}
"""


def test_prompt_file_adds_refines_and_removes_objects_frame_by_frame(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(6))
    with_refine = tmp_path / "prompts.yaml"
    with_refine.write_text(PROMPTS_YAML)
    without_refine = tmp_path / "no_refine.yaml"
    without_refine.write_text("".join(line for line in PROMPTS_YAML.splitlines(True) if "refine" not in line))
    assert track(str(video), "--prompts", str(with_refine), "--json", str(tmp_path / "a.jsonl")) == 0
    assert track(str(video), "--prompts", str(without_refine), "--json", str(tmp_path / "b.jsonl")) == 0
    refined, plain = json_lines(tmp_path / "a.jsonl"), json_lines(tmp_path / "b.jsonl")
    # frame 2 adds object 2, frame 4 removes object 1, time 0.45 s (frame 5 at 10 fps) adds object 3
    assert ids_per_frame(refined) == [[1], [1], [1, 2], [1, 2], [2], [2, 3]]
    assert ids_per_frame(plain) == ids_per_frame(refined)
    # the refinement changes object 1 on frame 3 and nothing before it
    assert refined[:3] == [dict(r, seconds=a["seconds"]) for r, a in zip(plain[:3], refined[:3])]
    assert refined[3]["objects"][0] != plain[3]["objects"][0]


def test_json_prompt_file_with_remove_of_several_objects(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(3))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([
        {"frame": 0, "object": 4, "points": [[32, 32]]},
        {"frame": 0, "object": 9, "points": [[40, 70]], "labels": [1]},
        {"frame": 2, "action": "remove", "objects": [4, 9]},
    ]))
    assert track(str(video), "--prompts", str(prompts), "--json", str(tmp_path / "t.jsonl")) == 0
    assert ids_per_frame(json_lines(tmp_path / "t.jsonl")) == [[4, 9], [4, 9], []]


def test_negative_point_changes_the_mask_versus_positive_only(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(1))
    assert track(str(video), "--point", SQUARE, "--json", str(tmp_path / "pos.jsonl")) == 0
    assert track(str(video), "--point", SQUARE, "--point", "60,60,0", "--json", str(tmp_path / "neg.jsonl")) == 0
    (positive,), (negative,) = json_lines(tmp_path / "pos.jsonl"), json_lines(tmp_path / "neg.jsonl")
    assert [o["id"] for o in negative["objects"]] == [1]  # points without @OBJ belong to object 1
    assert positive["objects"][0]["area"] != negative["objects"][0]["area"]


def test_points_and_a_box_of_one_object_form_one_prompt(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(1))
    assert track(str(video), "--box", "20,20,44,44@3", "--point", "32,32@3", "--json", str(tmp_path / "t.jsonl")) == 0
    assert ids_per_frame(json_lines(tmp_path / "t.jsonl")) == [[3]]


def test_image_folder_input(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames", clip(4))
    assert track(str(folder), "--fps", "2", "--point", SQUARE, "--masks", str(tmp_path / "m"),
                 "--json", str(tmp_path / "t.jsonl")) == 0
    assert len(list((tmp_path / "m").glob("*.png"))) == 4
    assert [r["time"] for r in json_lines(tmp_path / "t.jsonl")] == [0.0, 0.5, 1.0, 1.5]


def test_max_frames_stops_early(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(6))
    assert track(str(video), "--point", SQUARE, "--max-frames", "2", "--json", str(tmp_path / "t.jsonl")) == 0
    assert len(json_lines(tmp_path / "t.jsonl")) == 2


def test_ctrl_c_ends_a_run_with_every_finished_frame_written(tmp_path: Path) -> None:
    """What stops a camera run: the frames tracked so far are all written and the run says it was interrupted."""
    def camera():
        yield from bench.clip_frames(SyntheticClip(HEIGHT, WIDTH), 3)
        raise KeyboardInterrupt

    tracker, _ = make_tracker(build_parser().parse_args(["track", "0", *MODEL_ARGS]))
    schedule = command_line_schedule(["32,32"], [])
    output = JsonLines(str(tmp_path / "t.jsonl"))
    stats = track_frames(tracker, camera(), [schedule], [output])
    output.close()
    assert stats.interrupted and stats.frames == 3 and stats.object_ids == [1]
    assert [r["frame"] for r in json_lines(tmp_path / "t.jsonl")] == [0, 1, 2]


# --------------------------------------------------------------------------- rosbag2 in and out


def read_bag(path: Path) -> Dict[str, list]:
    """topic -> [(msgtype, log time, raw bytes, message)] of a recording; our types registered."""
    from rosbags.rosbag2 import Reader

    from sam2_rt.io.rosbag_output import sam2_ros_typestore

    store = sam2_ros_typestore()
    topics: Dict[str, list] = {}
    with Reader(path) as reader:
        for connection, log_time, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            topics.setdefault(connection.topic, []).append((connection.msgtype, log_time, bytes(raw), msg))
    return topics


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
def test_rosbag_topic_in_and_rosbag_out_with_the_input_headers(tmp_path: Path, compressed: bool) -> None:
    frames = clip(5)
    recording = write_bag(tmp_path / "rec", frames, compressed=compressed, extra_topic=True)
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    out = tmp_path / "tracked"
    assert track(str(recording), "--topic", topic, "--point", f"{SQUARE}@1", "--point", f"{DISC}@2",
                 "--bag", str(out), "--output", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "t.jsonl")) == 0

    assert len(video_frames(tmp_path / "o.mp4")) == 5
    records = json_lines(tmp_path / "t.jsonl")
    assert [r["stamp_ns"] for r in records] == [stamp_ns(i) for i in range(5)]
    assert {r["frame_id"] for r in records} == {BAG_FRAME_ID}

    written, original = read_bag(out), read_bag(recording)
    assert set(written) == {topic, "/masks", "/objects"}
    # the input images are copied byte for byte, at their recorded times
    assert [m[1:3] for m in written[topic]] == [m[1:3] for m in original[topic]]
    for name in ("/masks", "/objects"):
        assert [m[1] for m in written[name]] == [m[1] for m in original[topic]]
        headers = [m[3].header for m in written[name]]
        assert [h.stamp.sec * 10**9 + h.stamp.nanosec for h in headers] == [stamp_ns(i) for i in range(5)]
        assert {h.frame_id for h in headers} == {BAG_FRAME_ID}
    masks = [m[3] for m in written["/masks"]]
    assert {(m.encoding, m.height, m.width, m.step) for m in masks} == {("mono16", HEIGHT, WIDTH, 2 * WIDTH)}
    first = np.frombuffer(masks[0].data.tobytes(), dtype="<u2").reshape(HEIGHT, WIDTH)
    assert set(np.unique(first).tolist()) <= {0, 1, 2} and first.any()
    objects = [m[3] for m in written["/objects"]]
    assert written["/objects"][0][0] == "sam2_ros/msg/TrackedObjectArray"
    assert [[o.object_id for o in msg.objects] for msg in objects] == [[1, 2]] * 5
    assert [o.mask_area for o in objects[0].objects] == [o["area"] for o in records[0]["objects"]]


def test_rosbag_without_topic_uses_its_only_image_topic(tmp_path: Path) -> None:
    recording = write_bag(tmp_path / "rec", clip(2), storage="mcap")
    assert track(str(recording), "--point", SQUARE, "--json", str(tmp_path / "t.jsonl")) == 0
    assert len(json_lines(tmp_path / "t.jsonl")) == 2


def test_bag_output_from_a_video_records_rgb8_images(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(2))
    assert track(str(video), "--point", SQUARE, "--bag", str(tmp_path / "out"), "--bag-storage", "mcap") == 0
    written = read_bag(tmp_path / "out")
    assert set(written) == {"/image", "/masks", "/objects"}
    images = [m[3] for m in written["/image"]]
    assert [(i.encoding, i.height, i.width) for i in images] == [("rgb8", HEIGHT, WIDTH)] * 2
    assert [i.header.stamp.nanosec for i in images] == [0, 100_000_000]


def test_bag_output_is_what_ros_reads_type_hashes_and_cdr(tmp_path: Path) -> None:
    """ROS's own view of the recording: rclpy deserialises its messages with the generated sam2_ros types,
    and the type hashes in its metadata are the ones the ROS interface build computed."""
    pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
    from rclpy.serialization import deserialize_message
    from sam2_ros.msg import TrackedObjectArray
    from sensor_msgs.msg import Image

    video = write_video(tmp_path / "clip.avi", clip(2))
    assert track(str(video), "--point", f"{SQUARE}@5", "--bag", str(tmp_path / "out")) == 0
    written = read_bag(tmp_path / "out")
    objects = deserialize_message(written["/objects"][1][2], TrackedObjectArray)
    assert [o.object_id for o in objects.objects] == [5] and objects.header.stamp.nanosec == 100_000_000
    mask = deserialize_message(written["/masks"][1][2], Image)
    assert (mask.encoding, mask.height, mask.width) == ("mono16", HEIGHT, WIDTH)

    generated = Path(sys.prefix) / "share" / "sam2_ros" / "msg" / "TrackedObjectArray.json"
    if not generated.is_file():
        pytest.skip(f"no ROS interface build at {generated.parent} to compare type hashes with")
    ros_hash = json.loads(generated.read_text())["type_hashes"][0]["hash_string"]
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "out") as reader:
        digests = {c.topic: c.digest for c in reader.connections}
    assert digests["/objects"] == ros_hash


# --------------------------------------------------------------------------- errors


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The error line on stderr: the last one; nothing else there but log lines (e.g. the random-weights
    warning) and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    *others, last = err.strip().splitlines()
    assert all(line.startswith(("WARNING: ", "INFO: ")) for line in others), err
    assert last.startswith(("sam2-rt track: error: ", "sam2-rt download: error: ")), err
    return last


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi", clip(2))


@pytest.mark.parametrize(
    "make_args,status,message",
    [
        (lambda p, v: [str(p / "notes.mp4"), "--point", "1,1"], 1, "cannot open .*notes.mp4"),
        (lambda p, v: [str(p / "absent.mp4"), "--point", "1,1"], 1, "input .*absent.mp4 does not exist"),
        (lambda p, v: [str(v), "--point", "1,2,3,4"], 2, r"expected X,Y\[,LABEL\]\[@OBJ\]"),
        (lambda p, v: [str(v), "--box", "30,30,10,10"], 2, "needs X1 > X0 and Y1 > Y0"),
        (lambda p, v: [str(v), "--point", "500,20"], 1, r"--point 500,20: .*outside the 128x96 frame"),
        (lambda p, v: [str(v), "--point", "1,1", "--model", "sam3_tiny"], 2, "invalid choice: 'sam3_tiny'"),
        # MODEL_ARGS' --image-size 128: a multiple of 32, not of 256
        (lambda p, v: [str(v), "--point", "1,1", "--model", "edgetam"], 2,
         r"argument --image-size: EdgeTAM needs an image_size that is a multiple of 256 .*got 128 \(--model edgetam\)"),
        (lambda p, v: [str(v), "--point", "1,1", "--json", str(v / "x.jsonl")], 1, "cannot write the JSON file"),
        (lambda p, v: [str(v), "--point", "1,1", "--output", str(v / "o.mp4")], 1, "cannot write the overlay"),
        (lambda p, v: [str(v), "--point", "1,1", "--bag", str(p)], 1, "exists already"),
        (lambda p, v: [str(v)], 2, "no prompts"),
        (lambda p, v: [str(v), "--prompts", str(p / "bad.yaml")], 1, "bad.yaml: prompt 1: unknown key.*objekt"),
        (lambda p, v: [str(v), "--point", "1,1", "--topic", "/camera"], 1, "applies only to rosbag2"),
        (lambda p, v: [str(p / "rec"), "--topic", "/nope", "--point", "1,1"], 1,
         r"topic /nope is not in .*rec; its image topics: /camera/image_raw \(Image\)"),
        (lambda p, v: [str(v), "--prompts", str(p / "refine.yaml")], 1, "cannot refine object 7: it is not tracked"),
    ],
    ids=["unreadable-input", "missing-input", "point-syntax", "box-order", "point-outside", "unknown-model",
         "edgetam-size", "unwritable-json", "unwritable-video", "existing-bag", "no-prompts", "bad-prompt-file",
         "topic-not-bag", "topic-not-in-bag", "refine-unknown"],
)
def test_each_error_is_one_line_with_a_non_zero_status(tmp_path: Path, video: Path, capsys: pytest.CaptureFixture,
                                                       make_args, status: int, message: str) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "bad.yaml").write_text("- {frame: 0, objekt: 1, points: [[1, 1]]}\n")
    (tmp_path / "refine.yaml").write_text("- {frame: 0, object: 1, points: [[5, 5]]}\n"
                                          "- {frame: 1, action: refine, object: 7, points: [[5, 5]]}\n")
    write_bag(tmp_path / "rec", clip(1))
    assert track(*make_args(tmp_path, video)) == status
    assert re.search(message, error_line(capsys))


def test_missing_checkpoint_is_refused_naming_sam2_rt_download(tmp_path: Path, video: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SAM2_RT_CACHE", str(tmp_path / "empty_cache"))
    rc = cli.main(["track", str(video), "--point", "1,1", "--image-size", "128", "--device", "cpu", "--quiet"])
    assert rc == 1
    line = error_line(capsys)
    assert "no checkpoint for sam2.1_hiera_tiny: run `sam2-rt download sam2.1_hiera_tiny`" in line
    assert "--random-weights" in line


def test_console_script_reports_a_missing_camera_on_stderr_with_status_1(tmp_path: Path) -> None:
    """The real process: exit status and stderr as a shell sees them (camera 99 does not exist)."""
    result = subprocess.run(
        [sys.executable, "-m", "sam2_rt.cli", "track", "99", "--point", "1,1", *MODEL_ARGS],
        capture_output=True, text=True, env=dict(os.environ, SAM2_RT_CACHE=str(tmp_path)), timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("sam2-rt track: error: cannot open camera 99: no such camera, or it is busy")
    assert "Traceback" not in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------- download


@pytest.fixture
def blob_server() -> Iterator[object]:
    from test_checkpoint import BlobServer

    server = BlobServer(b"\0" * 3 * 2**20)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_download_list_shows_sizes_local_files_and_sha256_state(tmp_path: Path, blob_server,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SAM2_RT_CACHE", str(tmp_path))
    manifest = Manifest(tmp_path / "manifest.json")
    for name, content in (("sam2.1_hiera_tiny", b"tiny"), ("sam2.1_hiera_small", b"small")):
        path = tmp_path / CHECKPOINTS[name].filename
        path.write_bytes(content)
        manifest.record(name, sha256_file(path), len(content), "http://mirror/")
    (tmp_path / CHECKPOINTS["sam2.1_hiera_small"].filename).write_bytes(b"changed")
    (tmp_path / CHECKPOINTS["sam2_hiera_tiny"].filename).write_bytes(b"copied in")
    mirror = f"http://127.0.0.1:{blob_server.server_address[1]}"
    assert cli.main(["download", "--list", "--mirror", mirror]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert list(rows) == list(MODEL_NAMES)  # the eight SAM 2 / 2.1 models and EdgeTAM
    assert all(" 3.0 MiB " in row for row in rows.values())
    assert "present, sha256 verified" in rows["sam2.1_hiera_tiny"]
    assert "present, sha256 MISMATCH" in rows["sam2.1_hiera_small"]
    assert "present, sha256 unrecorded" in rows["sam2_hiera_tiny"]
    assert "not downloaded" in rows["sam2.1_hiera_large"]
    assert "not downloaded" in rows["edgetam"] and str(tmp_path / "edgetam.pt") in rows["edgetam"]
    assert str(tmp_path / "sam2.1_hiera_tiny.pt") in rows["sam2.1_hiera_tiny"]


def test_download_without_network_fails_fast_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens there
    rc = cli.main(["download", "sam2.1_hiera_tiny", "--dest", str(tmp_path), "--mirror", closed_port,
                   "--timeout", "5", "--quiet"])
    assert rc == 1
    assert "download of http://127.0.0.1:9/sam2.1_hiera_tiny.pt failed" in error_line(capsys)


def test_download_edgetam_asks_for_edgetam_pt_at_meta_or_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens there
    rc = cli.main(["download", "edgetam", "--dest", str(tmp_path), "--mirror", closed_port, "--timeout", "5",
                   "--quiet"])
    assert rc == 1
    assert "download of http://127.0.0.1:9/edgetam.pt failed" in error_line(capsys)
    # without --mirror: the file EdgeTAM's README points at (the download itself is replaced: no request)
    asked = []
    monkeypatch.setattr(download_command, "download",
                        lambda name, folder, url, **kwargs: asked.append((name, url)) or folder / "edgetam.pt")
    assert cli.main(["download", "edgetam", "--dest", str(tmp_path), "--quiet"]) == 0
    assert asked == [("edgetam", "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt")]
    assert capsys.readouterr().out.strip() == f"edgetam: {tmp_path / 'edgetam.pt'}"


def test_download_of_an_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["download", "sam3_tiny"]) == 2
    assert "unknown model 'sam3_tiny'" in error_line(capsys)


# --------------------------------------------------------------------------- bench


def test_bench_reports_a_summary(capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["bench", *MODEL_ARGS, "--objects", "2", "--frames", "2", "--height", "64", "--width", "80"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["frame"] for line in lines[:-1]] == [0, 1]
    summary = lines[-1]
    assert summary["frames"] == 2 and summary["objects"] == [1, 2] and summary["state_bytes"] > 0


def test_detections_file_starts_objects_with_labels_and_ignores_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Plain random weights here: every object is absent, so each keeps the box it was started with as its last
    known box, which makes the policy's matching exact (no dependence on random masks)."""
    from sam2_rt.weights.checkpoint import random_model

    monkeypatch.setattr(runtime, "random_model", random_model)

    def box_of_square(index: int) -> list:
        x, y = square_centre(index)
        return [x - 12, y - 12, x + 12, y + 12]

    x, y = disc_centre(3)
    detections = {"frames": {
        "0": [{"box": box_of_square(0), "score": 0.9, "label": "cube", "track_id": 7},
              {"box": [x - 12, 58, x + 12, 82], "score": 0.2, "label": "ball"}],
        "2": [{"box": box_of_square(2), "score": 0.9, "label": "cube", "track_id": "7"}],
        "3": [{"box": [x - 12, y - 12, x + 12, y + 12], "score": 0.8, "label": "ball"}],
    }}
    (tmp_path / "det.json").write_text(json.dumps(detections))
    video = write_video(tmp_path / "clip.avi", clip(5))
    assert track(str(video), "--detections", str(tmp_path / "det.json"), "--json", str(tmp_path / "t.jsonl")) == 0
    records = json_lines(tmp_path / "t.jsonl")
    assert ids_per_frame(records) == [[1], [1], [1], [1, 2], [1, 2]]
    assert [o["label"] for o in records[0]["objects"]] == ["cube"]
    assert [o["label"] for o in records[4]["objects"]] == ["cube", "ball"]
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["detection_decisions"] == {"ignored": 2, "started": 2}


def test_a_bad_detections_file_is_one_line_with_status_1(tmp_path: Path, video: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "det.json").write_text(json.dumps({"frames": {"0": [{"box": [1, 2, 3]}]}}))
    assert track(str(video), "--detections", str(tmp_path / "det.json")) == 1
    assert re.search(r"det.json: frame 0, detection 0: 'box' must be 4 numbers", error_line(capsys))

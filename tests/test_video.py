"""Frame sources: video file, image folder, camera index, rosbag2 (Image and CompressedImage, directory and
.mcap) give the same frames with their rate, size and timestamps; bad inputs fail with one clear message."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media import BAG_FRAME_ID, HEIGHT, WIDTH, clip, stamp_ns, write_bag, write_folder, write_video
from sam2_rt.io.video import DEFAULT_FRAME_ID, VideoSourceError, open_source


def test_video_file_gives_its_frames_size_rate_and_timestamps(tmp_path: Path) -> None:
    frames = clip(5)
    with open_source(str(write_video(tmp_path / "clip.avi", frames, fps=10.0))) as source:
        assert (source.kind, source.size, source.fps, source.num_frames, source.live) == (
            "video", (HEIGHT, WIDTH), 10.0, 5, False)
        got = list(source)
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [f.time_s for f in got] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [f.stamp_ns for f in got] == [0, 100_000_000, 200_000_000, 300_000_000, 400_000_000]
    assert all(f.frame_id == DEFAULT_FRAME_ID and f.message is None for f in got)
    # MJPG is lossy: the frames are close to the written ones, not equal.
    assert all(np.abs(f.rgb.astype(int) - rgb).mean() < 4 for f, rgb in zip(got, frames))


def test_image_folder_is_read_in_natural_order_at_the_given_rate(tmp_path: Path) -> None:
    frames = clip(12)
    folder = write_folder(tmp_path / "frames", frames)
    (folder / "notes.txt").write_text("not an image")
    with open_source(str(folder), fps=4.0) as source:
        assert (source.kind, source.size, source.fps, source.num_frames) == ("folder", (HEIGHT, WIDTH), 4.0, 12)
        got = list(source)
    assert len(got) == 12
    assert all(np.array_equal(f.rgb, rgb) for f, rgb in zip(got, frames))  # PNG: lossless, frame_10 after frame_9
    assert got[10].time_s == pytest.approx(2.5)


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rosbag2_topic_gives_frames_with_header_stamps_and_frame_id(tmp_path: Path, compressed: bool,
                                                                   storage: str) -> None:
    frames = clip(6)
    bag = write_bag(tmp_path / "rec", frames, compressed=compressed, storage=storage, extra_topic=True)
    with open_source(str(bag)) as source:  # the only image topic is chosen without asking
        assert (source.kind, source.size, source.num_frames) == ("rosbag2", (HEIGHT, WIDTH), 6)
        assert source.fps == pytest.approx(10.0, rel=0.05)  # estimated from the bag's metadata
        got = list(source)
    assert [f.stamp_ns for f in got] == [stamp_ns(i) for i in range(6)]
    assert [f.time_s for f in got] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert all(f.frame_id == BAG_FRAME_ID for f in got)
    assert all(np.array_equal(f.rgb, rgb) for f, rgb in zip(got, frames))  # rgb8 and png are lossless
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    assert {f.message.topic for f in got} == {topic}
    assert [f.message.log_time_ns for f in got] == [stamp_ns(i) + 5_000_000 for i in range(6)]


def test_topic_not_in_the_bag_names_the_image_topics(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "rec", clip(2))
    with pytest.raises(VideoSourceError, match=r"topic /front/image is not in .*rec; its image topics: "
                                               r"/camera/image_raw \(Image\)"):
        open_source(str(bag), topic="/front/image")


def test_topic_of_another_type_is_refused(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "rec", clip(2), extra_topic=True)
    with pytest.raises(VideoSourceError, match="topic /chatter .* holds std_msgs/msg/String"):
        open_source(str(bag), topic="/chatter")


def test_topic_with_a_video_file_is_refused(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", clip(2))
    with pytest.raises(VideoSourceError, match="applies only to rosbag2 recordings; .* is a video"):
        open_source(str(video), topic="/camera/image_raw")


def test_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(VideoSourceError, match="input .*nothing.mp4 does not exist"):
        open_source(str(tmp_path / "nothing.mp4"))


def test_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(VideoSourceError, match="notes.mp4"):
        open_source(str(path))


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VideoSourceError, match="no images"):
        open_source(str(tmp_path))


def test_camera_index_that_does_not_exist_fails_with_its_message() -> None:
    index = 99  # no machine has /dev/video99
    assert not Path(f"/dev/video{index}").exists()
    with pytest.raises(VideoSourceError, match=f"cannot open camera {index}: no such camera"):
        open_source(str(index))

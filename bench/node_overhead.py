"""The tracker node's own per-frame cost, model excluded: decode + label image + messages + publishing.

Runs the steps the node's worker runs around `Tracker.step`, on a fixed tracker result, with real rclpy
publishers that have a subscriber in a second participant (so every message is serialised and delivered):

  decode    sensor_msgs/Image rgb8 -> (H, W, 3) RGB (`image_to_rgb`)
  outputs   TrackResult -> host arrays + label image (`FrameOutputs.from_result`), made of
    label_image   the merge of the masks by logit, `TrackResult.label_image()` (sam2_rt's post-processing)
    host          everything else of it (areas, boxes, scores: device -> numpy), timed with the label
                  image precomputed
  messages  mono16 label image + TrackedObjectArray (`mask_message`, `objects_message`)
  publish   publishing both
  overlay   drawing the overlay + bgr8 message + publishing (only while someone subscribes to it)

Prints one JSON line per frame size; times are medians in ms over --iterations frames. `total` times decode +
outputs + messages + publish in one go; `node_own` = decode + host + messages + publish (the node's own
work, sam2_rt's label image excluded).

    .venv/bin/python bench/node_overhead.py [--sizes 640x480 1280x720] [--objects 2] [--iterations 200]
                                            [--torch-threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from sam2_rt import ObjectState, TrackResult

REPO = Path(__file__).resolve().parents[1]


def track_result(height: int, width: int, num_objects: int):
    """A TrackResult of `num_objects` ellipses (about 5% of the frame each) with smooth logits."""
    from sam2_rt.tracking.transforms import boxes_from_masks

    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    logits = []
    for k in range(num_objects):
        cy, cx = height * (0.3 + 0.4 * (k % 2)), width * (0.15 + 0.7 * k / max(1, num_objects - 1))
        ry, rx = height * 0.15, width * 0.1
        logits.append(4.0 * (1.0 - ((rows - cy) / ry) ** 2 - ((cols - cx) / rx) ** 2))
    stacked = torch.stack(logits)
    masks = stacked > 0
    return TrackResult(
        frame_index=10,
        object_ids=list(range(1, num_objects + 1)),
        masks=masks,
        logits=stacked,
        low_res_logits=torch.zeros(num_objects, 1, 64, 64),
        ious=torch.full((num_objects,), 0.9),
        presence=torch.full((num_objects,), 0.95),
        states=[ObjectState.TRACKING] * num_objects,
        boxes=boxes_from_masks(masks),
    )


@dataclass
class _PrecomputedLabels(TrackResult):
    """A TrackResult whose label image is already computed (isolates the node's own host-side work)."""

    labels: Optional[torch.Tensor] = None

    def label_image(self) -> torch.Tensor:
        return self.labels


def median_ms(function: Callable[[], object], iterations: int, warmup: int = 10) -> Tuple[float, float]:
    """(median, 90th percentile) of one call in milliseconds."""
    for _ in range(warmup):
        function()
    times: List[float] = []
    for _ in range(iterations):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), float(np.percentile(times, 90))


def bench_size(node, publishers: Dict[str, object], height: int, width: int, num_objects: int,
               iterations: int) -> Dict[str, object]:
    from std_msgs.msg import Header

    from sam2_ros.conversions import image_to_rgb, numpy_to_image
    from sam2_ros.outputs import FrameOutputs, mask_message, objects_message
    from sam2_ros.overlay import draw_overlay

    rng = np.random.default_rng(0)
    header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera")
    image = numpy_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8", header)
    result = track_result(height, width, num_objects)
    precomputed = _PrecomputedLabels(**asdict(result), labels=result.label_image())
    rgb = image_to_rgb(image)
    outputs = FrameOutputs.from_result(result)
    mask_msg = mask_message(outputs, header)
    objects_msg = objects_message(outputs, header, 1_000_000, 0)

    def publish() -> None:
        publishers["masks"].publish(mask_msg)
        publishers["objects"].publish(objects_msg)

    def overlay() -> None:
        publishers["overlay"].publish(numpy_to_image(draw_overlay(rgb, outputs, 0.5), "bgr8", header))

    def whole_frame(with_overlay: bool) -> Callable[[], None]:
        def run() -> None:
            frame = image_to_rgb(image)
            frame_outputs = FrameOutputs.from_result(result)
            publishers["masks"].publish(mask_message(frame_outputs, header))
            if with_overlay:
                publishers["overlay"].publish(numpy_to_image(draw_overlay(frame, frame_outputs, 0.5), "bgr8", header))
            publishers["objects"].publish(objects_message(frame_outputs, header, 1_000_000, 0))
        return run

    stages = {
        "decode": lambda: image_to_rgb(image),
        "outputs": lambda: FrameOutputs.from_result(result),
        "label_image": result.label_image,
        "host": lambda: FrameOutputs.from_result(precomputed),
        "messages": lambda: (mask_message(outputs, header), objects_message(outputs, header, 1_000_000, 0)),
        "publish": publish,
        "overlay": overlay,
        "total": whole_frame(False),
        "total_with_overlay": whole_frame(True),
    }
    line: Dict[str, object] = {"bench": "node_overhead", "size": f"{width}x{height}", "objects": num_objects}
    for name, function in stages.items():
        median, p90 = median_ms(function, iterations)
        line[f"{name}_ms"] = round(median, 3)
        line[f"{name}_p90_ms"] = round(p90, 3)
    line["node_own_ms"] = round(sum(line[f"{name}_ms"] for name in ("decode", "host", "messages", "publish")), 3)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"], help="WIDTHxHEIGHT frame sizes")
    parser.add_argument("--objects", type=int, default=2, help="tracked objects in the result")
    parser.add_argument("--iterations", type=int, default=200, help="timed frames per stage")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    options = parser.parse_args()
    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)

    # Private, local DDS with the shipped profile (as the node runs it); set before rclpy loads.
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_images.xml")
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from sam2_ros.msg import TrackedObjectArray
    from sam2_ros.qos import OUTPUT_QOS

    publisher_context, subscriber_context = Context(), Context()
    rclpy.init(context=publisher_context)
    rclpy.init(context=subscriber_context)
    try:
        node = Node("node_overhead_bench", context=publisher_context)
        listener = Node("node_overhead_listener", context=subscriber_context)
        topics = {"masks": Image, "objects": TrackedObjectArray, "overlay": Image}
        publishers = {name: node.create_publisher(kind, name, OUTPUT_QOS) for name, kind in topics.items()}
        # Not spun: Fast DDS still receives every sample into the reader's history (its own threads).
        for name, kind in topics.items():
            listener.create_subscription(kind, name, lambda msg: None, OUTPUT_QOS)
        deadline = time.monotonic() + 20.0
        while any(p.get_subscription_count() == 0 for p in publishers.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        machine = f"{os.cpu_count()}-core {platform.machine()} CPU, torch threads {torch.get_num_threads()}"
        for size in options.sizes:
            width, height = (int(v) for v in size.split("x"))
            line = bench_size(node, publishers, height, width, options.objects, options.iterations)
            line["machine"] = machine
            print(json.dumps(line), flush=True)
        node.destroy_node()
        listener.destroy_node()
    finally:
        publisher_context.try_shutdown()
        subscriber_context.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A second ROS 2 process for the DDS tests: `python tests/ros_peer.py talker|services|camera [args]`.

talker    publishes a known Prompt and TrackedObjectArray at 10 Hz until terminated.
services  serves AddPrompt / RemoveObjects / Reset until terminated, with the node's own answer texts
          (sam2_ros.requests) over a fixed set of ids {1, 2, 3}.
camera N RATE [--handshake]  waits for a subscriber on `image`, publishes N 640x480 rgb8 frames at RATE Hz
          (frame_id = index), prints SENT N, then exits. With --handshake it starts on the listener's first SIGUSR1
          (sent once the listener has discovered this publisher: discovery done both ways, no frame lost to it)
          and exits on the second (the listener has what arrived: nothing left in flight is cut off).
It prints READY once its endpoints exist.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point32
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from sam2_ros.compat import rclpy_session
from sam2_ros.conversions import numpy_to_image
from sam2_ros.msg import Prompt, TrackedObject, TrackedObjectArray
from sam2_ros.requests import RESET_MESSAGE, prompt_accepted_message, removal_message, unknown_ids_message
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset

HEADER = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="peer_camera")


def known_prompt() -> Prompt:
    mask = numpy_to_image(np.eye(4, 6, dtype=np.uint8) * 255, "mono8", HEADER)
    return Prompt(
        header=HEADER,
        object_id=42,
        mode=Prompt.MODE_REFINE,
        points=[Point32(x=10.5, y=20.25, z=0.0), Point32(x=300.0, y=5.0, z=0.0)],
        labels=[Prompt.LABEL_FOREGROUND, Prompt.LABEL_BACKGROUND],
        has_box=True,
        box=[1.0, 2.0, 30.0, 40.0],
        mask=mask,
    )


def known_objects() -> TrackedObjectArray:
    objects = [
        TrackedObject(
            object_id=7,
            state=TrackedObject.STATE_OCCLUDED,
            score=0.75,
            presence=0.125,
            bbox=RegionOfInterest(x_offset=3, y_offset=4, width=50, height=60, do_rectify=False),
            mask_area=1234,
        ),
        TrackedObject(object_id=9, state=TrackedObject.STATE_TRACKING, score=0.5, presence=1.0, mask_area=1),
    ]
    return TrackedObjectArray(
        header=HEADER, objects=objects, latency=Duration(sec=0, nanosec=25_000_000), dropped_frames=3
    )


def run_talker(node: Node) -> None:
    prompts = node.create_publisher(Prompt, "prompts", 10)
    objects = node.create_publisher(TrackedObjectArray, "objects", 10)

    def tick() -> None:
        prompts.publish(known_prompt())
        objects.publish(known_objects())

    node.create_timer(0.1, tick)
    print("READY", flush=True)
    rclpy.spin(node)


def run_services(node: Node) -> None:
    tracked = {1, 2, 3}

    def add_prompt(request: AddPrompt.Request, response: AddPrompt.Response) -> AddPrompt.Response:
        prompt = request.prompt
        response.object_id = prompt.object_id
        response.success = len(prompt.points) == len(prompt.labels) and prompt.object_id > 0
        action = "refined" if prompt.object_id in tracked else "added"
        response.message = prompt_accepted_message(prompt.object_id, action) if response.success else "rejected"
        return response

    def remove_objects(request: RemoveObjects.Request, response: RemoveObjects.Response):
        unknown = sorted(set(request.object_ids) - tracked)
        response.success = not unknown
        if unknown:
            response.message = unknown_ids_message(unknown, sorted(tracked))
        else:
            tracked.difference_update(request.object_ids)
            response.message = removal_message(request.object_ids)
        response.remaining_ids = sorted(tracked)
        return response

    def reset(request: Reset.Request, response: Reset.Response) -> Reset.Response:
        tracked.clear()
        response.success, response.message = True, RESET_MESSAGE
        return response

    node.create_service(AddPrompt, "add_prompt", add_prompt)
    node.create_service(RemoveObjects, "remove_objects", remove_objects)
    node.create_service(Reset, "reset", reset)
    print("READY", flush=True)
    rclpy.spin(node)


def run_camera(node: Node, count: int, rate_hz: float, handshake: bool) -> None:
    signals = threading.Semaphore(0)
    if handshake:
        signal.signal(signal.SIGUSR1, lambda *_: signals.release())
    publisher = node.create_publisher(Image, "image", qos_profile_sensor_data)
    print("READY", flush=True)
    deadline = time.monotonic() + 30.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if handshake:
        signals.acquire(timeout=30.0)  # the listener has discovered us too
    frame = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    template = numpy_to_image(frame, "rgb8")
    period = 1.0 / rate_hz
    start = time.monotonic()
    for index in range(count):
        template.header = Header(stamp=node.get_clock().now().to_msg(), frame_id=str(index))
        publisher.publish(template)
        time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))  # the camera's frame rate
    print(f"SENT {count}", flush=True)
    if handshake:
        signals.acquire(timeout=30.0)  # the last samples may still be in flight when publish() returns


def main() -> int:
    mode = sys.argv[1]
    try:
        with rclpy_session():
            node = Node(f"ros_peer_{mode}")
            if mode == "talker":
                run_talker(node)
            elif mode == "services":
                run_services(node)
            elif mode == "camera":
                run_camera(node, int(sys.argv[2]), float(sys.argv[3]), "--handshake" in sys.argv[4:])
            else:
                raise SystemExit(f"unknown mode {mode!r}")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

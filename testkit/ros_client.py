"""The test side of a tracker node over real DDS: its process, camera, prompts, services and outputs.

Shared by the node tests (tests/test_node*.py) and bench/multicam.py. The node runs in its own process (the
`sam2-ros-tracker` console script) on the private domain testkit.ros_env sets up.
"""
from __future__ import annotations

import functools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Set

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point32
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2_ros.conversions import numpy_to_image
from sam2_rt.io.synthetic import SyntheticClip
from sam2_ros.msg import Prompt, TrackedObjectArray
from sam2_ros.node import camera_topic
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset
from testkit.lifecycle import change_state, lifecycle_state
from testkit.ros_env import FASTDDS_PROFILE, ros_env
from testkit.waiting import wait_until

NODE_SCRIPT = str(Path(sys.executable).with_name("sam2-ros-tracker"))
WIDTH, HEIGHT = 640, 480
# Seconds one lock-step frame may take (model + DDS) on a loaded 2-core CPU.
STEP_TIMEOUT = 60.0
NODE_PARAMETERS = ("image_size:=128", "device:=cpu", "allow_random_weights:=true", "max_objects:=8",
                   "diagnostics_period:=0.5")


# The counters of /diagnostics that count frames and errors.
COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "images_rejected", "prompts_rejected",
            "requests_rejected", "worker_errors", "resolution_changes")


def node_command(*parameters: str, namespace: str = "/") -> List[str]:
    args = [NODE_SCRIPT, "--ros-args", "-r", f"__ns:={namespace}"]
    for parameter in parameters:
        args += ["-p", parameter]
    return args


class OutputReader:
    """Collects a process's output lines on a thread (a full pipe would block the process)."""

    def __init__(self, proc) -> None:
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for(self, text: str, timeout: float) -> bool:
        return wait_until(lambda: self.count(text) > 0, timeout)

    def text(self) -> str:
        return "\n".join(self.lines[-60:])


def wait_until_stable(read: Callable[[], int], period: float, timeout: float) -> int:
    """Read a count every `period` seconds until two reads agree (or `timeout`); the last read."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(period)
        current = read()
        if current == last:
            break
        last = current
    return last


@functools.lru_cache(maxsize=8)
def camera_clip(width: int = WIDTH, height: int = HEIGHT) -> SyntheticClip:
    """What the test camera shows at a W x H size: `camera_clip().frame(index)`, any index (endless streams)."""
    return SyntheticClip(height, width)


def stamp_of(index: int) -> Time:
    return Time(sec=1_000_000 + index, nanosec=index)


def index_of(stamp: Time) -> int:
    return stamp.sec - 1_000_000


class Client:
    """The test's ROS side of one node: camera, prompt publisher, service clients and output subscribers.

    Its executor spins on a background thread; received messages are kept by frame index (header stamp).
    """

    def __init__(self, context, namespace: str = "", camera: str = "", node_name: str = "sam2_tracker",
                 frame_id: str = "test_camera") -> None:
        self.namespace = namespace
        self.camera_name = camera
        self.frame_id = frame_id
        self.node = Node(f"node_test_client_{camera or 'default'}", namespace=namespace or "/", context=context)
        node = self.node

        def topic(name: str) -> str:
            return camera_topic(camera, name)

        self.camera = node.create_publisher(Image, topic("image"), qos_profile_sensor_data)
        self.compressed_camera = node.create_publisher(CompressedImage, topic("image/compressed"),
                                                       qos_profile_sensor_data)
        self.prompts = node.create_publisher(Prompt, topic("prompts"),
                                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        outputs = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.objects: Dict[int, TrackedObjectArray] = {}
        self.object_arrivals: Dict[int, float] = {}
        self.received: List[TrackedObjectArray] = []  # every objects message, in arrival order
        self.masks: Dict[int, Image] = {}
        self.overlays: Dict[int, Image] = {}
        self.diagnostics: List[tuple] = []  # (receive time, {key: value}, level, message) of this camera's status
        self.statuses: Dict[str, Dict[str, str]] = {}  # the node's latest values of every status, by status name
        node.create_subscription(TrackedObjectArray, topic("objects"), self._on_objects, outputs)
        node.create_subscription(Image, topic("masks"), lambda m: self.masks.__setitem__(index_of(m.header.stamp), m),
                                 outputs)
        node.create_subscription(Image, topic("overlay"),
                                 lambda m: self.overlays.__setitem__(index_of(m.header.stamp), m), outputs)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        prefix = f"{namespace}/{node_name}" if namespace else f"/{node_name}"
        # The node's services are private (~/add_prompt): under the node's name.
        self.add_prompt = node.create_client(AddPrompt, f"{prefix}/add_prompt")
        self.remove = node.create_client(RemoveObjects, f"{prefix}/remove_objects")
        self.reset_client = node.create_client(Reset, f"{prefix}/reset")
        self.set_parameters = node.create_client(SetParameters, f"{prefix}/set_parameters")
        self.describe_parameters = node.create_client(DescribeParameters, f"{prefix}/describe_parameters")
        self.get_state = node.create_client(GetState, f"{prefix}/get_state")
        self.change_state = node.create_client(ChangeState, f"{prefix}/change_state")
        # The node's own status (totals), or this camera's when the node has named cameras.
        self._status_name = f"{prefix}: camera {camera}" if camera else f"{prefix}: tracker"
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _on_objects(self, msg: TrackedObjectArray) -> None:
        index = index_of(msg.header.stamp)
        self.object_arrivals.setdefault(index, time.monotonic())
        self.objects[index] = msg
        self.received.append(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.statuses[status.name] = {kv.key: kv.value for kv in status.values}
            if status.name == self._status_name:
                values = {kv.key: kv.value for kv in status.values}
                self.diagnostics.append((time.monotonic(), values, status.level, status.message))

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join(timeout=10.0)
        self.node.destroy_node()

    # ------------------------------------------------------------------ camera

    def image(self, index: int, width: int = WIDTH, height: int = HEIGHT) -> Image:
        return numpy_to_image(camera_clip(width, height).frame(index), "rgb8",
                              Header(stamp=stamp_of(index), frame_id=self.frame_id))

    def step(self, index: int, width: int = WIDTH, height: int = HEIGHT) -> TrackedObjectArray:
        """Publish frame `index` and wait for its objects message (lock-step: no frame is dropped)."""
        return self.step_message(self.image(index, width, height))

    def step_message(self, msg, resend_after: float = 10.0) -> TrackedObjectArray:
        """Publish an Image (or, to a node with use_compressed, a CompressedImage) and wait for its objects
        message, found by the frame index its stamp encodes (`index_of`); sent again every `resend_after` s."""
        index = index_of(msg.header.stamp)
        camera = self.compressed_camera if isinstance(msg, CompressedImage) else self.camera
        deadline = time.monotonic() + STEP_TIMEOUT
        while index not in self.objects:
            assert time.monotonic() < deadline, f"no output for frame {index} within {STEP_TIMEOUT} s"
            camera.publish(msg)  # again after a while, in case a best-effort sample was lost
            wait_until(lambda: index in self.objects, timeout=resend_after)
        return self.objects[index]

    # ------------------------------------------------------------------ services

    def call(self, client, request, timeout: float = 60.0):
        assert client.wait_for_service(timeout_sec=30.0), f"service {client.srv_name} not available"
        future = client.call_async(request)
        assert wait_until(future.done, timeout), f"no answer from {client.srv_name}"
        return future.result()

    def prompt(self, object_id: int, mode: int = Prompt.MODE_ADD, points=(), labels=(), box=None) -> AddPrompt.Response:
        request = AddPrompt.Request(camera=self.camera_name, prompt=make_prompt(object_id, mode, points, labels, box))
        return self.call(self.add_prompt, request)

    def reset(self) -> None:
        assert self.call(self.reset_client, Reset.Request(camera=self.camera_name)).success

    def set(self, name: str, value) -> "SetParameters.Response":
        parameter = Parameter(name, value=value).to_parameter_msg()
        return self.call(self.set_parameters, SetParameters.Request(parameters=[parameter])).results[0]

    def lifecycle_state(self) -> str:
        return lifecycle_state(self.get_state, timeout=60.0)

    def transition(self, transition_id: int, timeout: float = 120.0) -> bool:
        """Trigger a lifecycle transition; whether it succeeded (a lost answer is told by the node's state)."""
        return change_state(self.change_state, self.get_state, transition_id, timeout)

    # ------------------------------------------------------------------ diagnostics

    def diagnostics_after(self, moment: float, timeout: float = 30.0) -> Dict[str, str]:
        """The first diagnostics values received after `moment` (time.monotonic())."""
        assert wait_until(lambda: any(t > moment for t, *_ in self.diagnostics), timeout), "no diagnostics"
        return next(values for t, values, *_ in self.diagnostics if t > moment)

    def counter(self, name: str) -> int:
        return int(self.diagnostics_after(time.monotonic())[name])

    def counters(self) -> Dict[str, int]:
        """The node's frame and error counters, from the first /diagnostics after now."""
        values = self.diagnostics_after(time.monotonic())
        return {name: int(values[name]) for name in COUNTERS}


@dataclass
class Burst:
    """Frames published without waiting for their outputs (`publish_burst`)."""

    sent: List[int]
    # Frames of `sent` whose objects had arrived when the last one was published.
    arrived_before_stop: Set[int]

    def processed(self, client: Client) -> List[int]:
        """The frames of the burst the node processed, in the order they were sent."""
        return [index for index in self.sent if index in client.objects]


def publish_burst(client: Client, frames: Iterator[int], count: int, rate_hz: float) -> Burst:
    """Publish `count` frames (indices from `frames`) at `rate_hz`, then wait until the last one was processed.

    Every frame shows the same picture (only the stamp changes), so building frames never slows the camera down.
    The pacing is best effort (a loaded machine publishes slower); nothing asserts the rate achieved.
    """
    sent = [next(frames) for _ in range(count)]
    msg = client.image(sent[0])
    start = time.monotonic()
    for k, index in enumerate(sent):
        msg.header.stamp = stamp_of(index)
        client.camera.publish(msg)
        time.sleep(max(0.0, start + (k + 1) / rate_hz - time.monotonic()))
    arrived = {index for index in sent if index in client.objects}
    # The newest frame always stays in the node's slot, so the last frame sent is the last one processed.
    assert wait_until(lambda: sent[-1] in client.objects, timeout=STEP_TIMEOUT), "the last frame was never processed"
    return Burst(sent, arrived)


def assert_latest_frame_kept(client: Client, burst: Burst) -> List[int]:
    """The one-slot buffer under a burst of frames; returns the frames processed.

    Outputs came in the order of their frames with the newest frame last, and once the camera stopped only the
    frame in progress, the newest one and at most one output still in transit came (a queue would have held a
    backlog of dozens). Whether frames were skipped depends on how fast the model is against the camera: the
    callers check that every frame the node received was processed or counted as dropped. Counts and orderings
    only: no clock bound.
    """
    processed = burst.processed(client)
    assert 1 <= len(processed) <= len(burst.sent), f"{len(processed)} of {len(burst.sent)} frames processed"
    assert processed[-1] == burst.sent[-1]
    arrivals = [client.object_arrivals[index] for index in processed]
    assert arrivals == sorted(arrivals), "outputs out of the order of their frames"
    after_stop = set(processed) - burst.arrived_before_stop
    assert len(after_stop) <= 3, f"{len(after_stop)} frames processed after the camera stopped: a backlog"
    return processed


def increase(before: Dict[str, int], after: Dict[str, int]) -> Dict[str, int]:
    """How much each counter of `before` rose."""
    return {name: after[name] - before[name] for name in before}


def make_prompt(object_id: int, mode: int = Prompt.MODE_ADD, points=(), labels=(), box=None) -> Prompt:
    msg = Prompt(object_id=object_id, mode=mode, labels=list(labels),
                 points=[Point32(x=float(x), y=float(y)) for x, y in points])
    msg.header.frame_id = "test_camera"
    if box is not None:
        msg.has_box, msg.box = True, [float(v) for v in box]
    return msg


def ids(msg: TrackedObjectArray) -> List[int]:
    return [o.object_id for o in msg.objects]


def node_env(tmp_path_factory) -> Dict[str, str]:
    # An empty checkpoint cache: a checkpoint a developer downloaded must not change what the tests see.
    # INFO lines go to stdout, which a pipe would buffer: unbuffered, a test sees each line as it is logged.
    return ros_env(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE),
                   SAM2_RT_CACHE=str(tmp_path_factory.mktemp("sam2_rt_cache")), RCUTILS_LOGGING_BUFFERED_STREAM="0")


class RunningNode:
    def __init__(self, proc, output: OutputReader, client: Client) -> None:
        self.proc, self.output, self.client = proc, output, client

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")



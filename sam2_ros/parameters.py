"""The tracker node's parameters: one table (`PARAMETERS`) drives the declarations (descriptors with description,
range, choices), validation, the activation settings, config/tracker.yaml, the launch arguments and the README
(tests check that they agree).

Choices shared with sam2_rt (models, devices, precisions, backends) come from `sam2_rt.modeling.config`, the one source
the CLI and the tools use too. This module imports no torch: the launch files import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from sam2_rt.modeling.config import (
    BACKEND_NAMES,
    DEVICE_NAMES,
    EDGETAM_NAME,
    IMAGE_SIZE_MULTIPLE,
    MODEL_NAMES,
    PRECISION_NAMES,
)
from sam2_rt.modeling.config import model_size_problem as config_size_problem
from sam2_rt.tracking.motion import MOTION_NAMES

NODE_NAME = "sam2_tracker"
# Object ids travel as uint16 (Prompt, TrackedObject) and as the pixels of the mono16 label image.
MAX_OBJECTS_LIMIT = 255
RELIABILITIES = ("best_effort", "reliable")
# A camera name is one token of a ROS name: its topics are <name>/image, <name>/masks, ...
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

ParameterValue = Union[bool, int, float, str, List[str]]

# When a parameter's new value takes effect.
APPLIES = {
    "start-up": "Read when the node starts.",
    "configure": "Read when the node is configured (cleanup + configure applies a change).",
    "activation": "Read when the node activates (deactivate + activate applies a change).",
    "at once": "Applied at once.",
}

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_STRING_ARRAY}


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: its default, its documentation and its constraints."""

    name: str
    default: ParameterValue
    description: str
    # Allowed values of a string parameter (empty: any).
    choices: Tuple[str, ...] = ()
    # (from, to, step) of an integer parameter, or (from, to) of a floating-point one.
    value_range: Optional[Tuple[float, ...]] = None
    # When a new value takes effect: one of APPLIES.
    applies: str = "activation"

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor declared for this parameter (description, range, choices)."""
        descriptor = ParameterDescriptor(
            name=self.name, type=_TYPES[type(self.default)], description=f"{self.description} {APPLIES[self.applies]}"
        )
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.value_range is not None and isinstance(self.default, int) and not isinstance(self.default, bool):
            low, high, step = self.value_range
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=int(step))]
        elif self.value_range is not None:
            low, high = self.value_range
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor


PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True, "Configure and activate the node as soon as it starts.", applies="start-up"),
    ParameterSpec(
        "cameras", [""],
        "Names of the cameras this node tracks with one model; each has its own topics <name>/image, "
        "<name>/prompts, <name>/masks, ... and its own object ids. [\"\"]: one camera with the plain topic names "
        "image, prompts, masks, ...",
        applies="configure",
    ),
    ParameterSpec("model", "sam2.1_hiera_tiny",
                  f"SAM 2 / SAM 2.1 model, or EdgeTAM ({EDGETAM_NAME}: light trunk, compressed memory; image_size a "
                  "multiple of 256).", choices=MODEL_NAMES),
    ParameterSpec(
        "checkpoint", "",
        "Meta's .pt checkpoint file of `model`. Empty: the file `sam2-rt download <model>` stores, if present.",
    ),
    ParameterSpec(
        "allow_random_weights", False,
        "Run with random weights when no checkpoint is found (demos and tests only: the masks are meaningless "
        "and a warning is logged every few seconds). False: the node refuses to activate without a checkpoint.",
    ),
    ParameterSpec("device", "auto", "Where the model runs; auto = cuda when available, else cpu.",
                  choices=DEVICE_NAMES),
    ParameterSpec("precision", "auto",
                  "Compute precision of the model: auto = bf16 on a CUDA GPU that has it, fp32 elsewhere; bf16 / "
                  "fp16 autocast.", choices=PRECISION_NAMES),
    ParameterSpec("backend", "eager",
                  "Model execution backend; an unavailable one falls back (tensorrt -> compile -> eager) with a warning.",
                  choices=BACKEND_NAMES),
    ParameterSpec(
        "warmup", True,
        "Build (compile) or load (TensorRT engine cache) every shape of the per-frame path on activation, "
        "before subscribing, so a live stream never waits for a build (no-op for the eager backend). False: "
        "shapes are built on the frames that first need them.",
    ),
    ParameterSpec("image_size", 1024,
                  f"Square model input side in pixels (multiple of 32, of 256 for {EDGETAM_NAME}; 1024 is Meta's).",
                  value_range=(64, 4096, IMAGE_SIZE_MULTIPLE)),
    ParameterSpec(
        "cpu_threads", 0,
        "Threads of torch's CPU kernels (per worker thread) when the model runs on the CPU; 0 = auto: the cores "
        "but one, shared among the worker threads (at least 1 each). The node's own threads, DDS and the camera "
        "driver need a core: OpenMP given every core stalls whole steps (seconds) whenever another thread takes "
        "one of them.",
        value_range=(0, 1024, 1),
    ),
    ParameterSpec(
        "worker_threads", 0,
        "Threads that run the model. 0 = auto: on a CPU with the eager backend one per camera, up to the cores "
        "(the measured best with several cameras, bench/RESULTS.md 'Worker threads'), else 1; the choice is "
        "logged and in /diagnostics. 1: each round tracks the newest frame of every camera in ONE batched step "
        "(the choice on a GPU). N > 1 (backend eager only; others run with 1): each thread tracks at most "
        "ceil(cameras / N) cameras per round, least recently served first, in its own batched step, beside the "
        "others.",
        value_range=(0, 64, 1),
    ),
    ParameterSpec("max_objects", 16, "Most objects tracked at once per camera (memory is preallocated for all).",
                  value_range=(1, MAX_OBJECTS_LIMIT, 1)),
    ParameterSpec("motion", "none",
                  "Motion-aware tracking: none = SAM 2's own mask choice; samurai = a Kalman filter per object "
                  "scores the candidate masks by motion and keeps poor frames out of memory (fast motion, "
                  "look-alikes, occlusion).", choices=MOTION_NAMES),
    ParameterSpec("max_conditioning_frames", 4, "Prompted frames kept per object (the first and the most recent).",
                  value_range=(1, 64, 1)),
    ParameterSpec("lost_after_frames", 30, "An object absent for more than this many frames is reported LOST.",
                  value_range=(0, 1_000_000, 1)),
    ParameterSpec("detection_min_score", 0.5, "Detector boxes with a lower score are ignored.",
                  value_range=(0.0, 1.0)),
    ParameterSpec("detection_iou_threshold", 0.3,
                  "A detector box overlapping a tracked object's box with at least this IoU is that object "
                  "(no new object is started for it).", value_range=(0.01, 1.0)),
    ParameterSpec("detection_reacquire_distance", 2.0,
                  "A lost object is re-acquired (same id) by a box of its class whose centre lies within this many "
                  "diagonals of its last known box.", value_range=(0.0, 1000.0)),
    ParameterSpec("detection_reacquire_after_frames", 15,
                  "An occluded object may be re-acquired by a box after this many frames absent (LOST ones "
                  "always).", value_range=(0, 1_000_000, 1)),
    ParameterSpec("detection_refresh_frames", 0,
                  "Re-prompt a tracked object with its matching detector box every this many frames (0: never).",
                  value_range=(0, 1_000_000, 1)),
    ParameterSpec("detection_remove_lost_frames", 0,
                  "Remove objects started by the detector once LOST for this many frames (0: never), freeing "
                  "their slot.", value_range=(0, 1_000_000, 1)),
    ParameterSpec("input_reliability", "best_effort",
                  "Reliability of the image subscription (best_effort also accepts reliable cameras).",
                  choices=RELIABILITIES),
    ParameterSpec("use_compressed", False,
                  "Subscribe to `image/compressed` (sensor_msgs/CompressedImage, jpeg/png) instead of `image`."),
    ParameterSpec("publish_overlay", True,
                  "Publish `overlay` (bgr8: tinted masks, boxes, ids); drawn only while someone subscribes.",
                  applies="at once"),
    ParameterSpec("overlay_alpha", 0.5, "Opacity of the mask tint in `overlay`.", value_range=(0.0, 1.0),
                  applies="at once"),
    ParameterSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", value_range=(0.1, 60.0),
                  applies="configure"),
    ParameterSpec("diagnostics_window", 10.0,
                  "Seconds of history behind the /diagnostics level: WARN while inputs were rejected within it, OK "
                  "again after (the totals stay available as values).", value_range=(1.0, 3600.0),
                  applies="at once"),
)
PARAMETER_SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def parameter_problem(name: str, value: Any) -> Optional[str]:
    """Why `value` is not acceptable for parameter `name` (None when it is).

    Checks what a ParameterDescriptor cannot express: choices, camera names and an existing checkpoint file.
    Types and numeric ranges are enforced by rclpy itself from the descriptors (on declaration and every set).
    """
    spec = PARAMETER_SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{value!r} is not one of {', '.join(spec.choices)}"
    if name == "checkpoint" and value and not Path(value).expanduser().is_file():
        return f"checkpoint file not found: {value}"
    if name == "cameras":
        return camera_names_problem(list(value))
    return None


def parameters_problems(values: Mapping[str, Any]) -> List[str]:
    """"name: why" for each value of `values` (parameter name -> value) that is not acceptable (`parameter_problem`),
    then for the pairs no single value decides: an image_size the model cannot run at (EdgeTAM's perceiver
    needs a multiple of 256). Empty when every value is acceptable."""
    problems = [f"{name}: {problem}" for name, value in values.items()
                if (problem := parameter_problem(name, value)) is not None]
    pair = model_size_problem(values.get("model"), values.get("image_size"))
    if pair is not None:
        problems.append(f"image_size: {pair}")
    return problems


def model_size_problem(model: Any, image_size: Any) -> Optional[str]:
    """Why `model` cannot run at `image_size` (None when it can, or when either is unknown or invalid on its own)."""
    problem = config_size_problem(model, image_size)
    return None if problem is None else f"{problem} (model {model})"


def camera_names_problem(names: Sequence[str]) -> Optional[str]:
    """Why `names` is not a valid `cameras` value (None when it is)."""
    if not names:
        return 'give at least one camera name ([""] = one camera with the plain topic names)'
    if list(names) == [""]:
        return None
    bad = [name for name in names if not CAMERA_NAME.fullmatch(name)]
    if bad:
        return f"camera names must be letters, digits and _ starting with a letter, got {bad}"
    if len(set(names)) != len(names):
        return f"camera names must be unique, got {list(names)}"
    return None


@dataclass(frozen=True)
class NodeSettings:
    """The parameters read on activation."""

    model: str
    checkpoint: str
    allow_random_weights: bool
    device: str
    precision: str
    backend: str
    warmup: bool
    image_size: int
    cpu_threads: int
    worker_threads: int
    max_objects: int
    motion: str
    max_conditioning_frames: int
    lost_after_frames: int
    detection_min_score: float
    detection_iou_threshold: float
    detection_reacquire_distance: float
    detection_reacquire_after_frames: int
    detection_refresh_frames: int
    detection_remove_lost_frames: int
    input_reliability: str
    use_compressed: bool


# --------------------------------------------------------------------------- launch arguments

# Node parameters that tracker.launch.py also offers as launch arguments (the ones users reach for). Each is
# passed to the node only when given: left empty, the params file's value (or the node's default) applies.
LAUNCH_ARGUMENTS: Tuple[str, ...] = (
    "model", "checkpoint", "allow_random_weights", "device", "backend", "precision", "warmup", "image_size",
    "max_objects", "cpu_threads", "worker_threads", "use_compressed", "cameras", "motion",
)


class LaunchArgumentError(ValueError):
    """A launch argument's text is not a valid value of its node parameter."""


def launch_argument_description(name: str) -> str:
    """The description of a parameter's launch argument: the parameter's, plus what empty means."""
    spec = PARAMETER_SPECS[name]
    constraint = ""
    if spec.choices:
        constraint = f" One of: {', '.join(spec.choices)}."
    elif spec.value_range is not None:
        constraint = f" Range {spec.value_range[0]:g} .. {spec.value_range[1]:g}."
    if isinstance(spec.default, list):
        constraint += " Comma-separated names."
    return (f"{spec.description}{constraint} Empty (default): the value of params_file, else the node's default "
            f"({launch_text(spec.default)!s}).")


def launch_argument_choices(name: str) -> Optional[List[str]]:
    """The `choices` of a parameter's launch argument ("" = not given), or None for a free value."""
    spec = PARAMETER_SPECS[name]
    if spec.choices:
        return ["", *spec.choices]
    if isinstance(spec.default, bool):
        return ["", "true", "false"]
    return None


def launch_text(value: ParameterValue) -> str:
    """A parameter value as a launch argument or YAML file spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value) if value != [""] else '[""]'
    return str(value)


def parse_launch_argument(name: str, text: str) -> ParameterValue:
    """The node parameter value of a launch argument's text.

    Raises:
      LaunchArgumentError: the text is not a value of the parameter's type, choices or range.
    """
    spec = PARAMETER_SPECS[name]
    default = spec.default
    value: ParameterValue
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            value = text.lower() == "true"
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, float):
            value = float(text)
        elif isinstance(default, list):
            value = [part.strip().strip("\"'") for part in text.strip("[]").split(",")]  # [""] is one camera
        else:
            value = text
    except ValueError as err:
        raise LaunchArgumentError(f"launch argument {name}:={text!r}: {err}") from None
    problem = parameter_problem(name, value) or _range_problem(spec, value)
    if problem is not None:
        raise LaunchArgumentError(f"launch argument {name}:={text!r}: {problem}")
    return value


def _range_problem(spec: ParameterSpec, value: ParameterValue) -> Optional[str]:
    if spec.value_range is None or isinstance(value, (bool, str, list)):
        return None
    low, high = spec.value_range[0], spec.value_range[1]
    if not low <= value <= high:
        return f"must be in {low:g} .. {high:g}"
    if isinstance(value, int) and (value - low) % spec.value_range[2]:
        return f"must be {low:g} plus a multiple of {spec.value_range[2]:g}"
    return None


def launch_parameters(params_file: str, arguments: Mapping[str, str]) -> List[Union[str, Dict[str, ParameterValue]]]:
    """The `parameters` of the launched node: the params file, then the launch arguments that were given.

    Later entries win in ROS, so an explicit argument overrides the file; an empty argument passes nothing and
    the file's value (or the node's default) stays.

    Arguments:
      params_file: YAML parameter file (empty: none).
      arguments: launch argument name -> its text, for names of LAUNCH_ARGUMENTS ("" = not given).
    Raises:
      LaunchArgumentError: a given argument is invalid (the launch stops with this message).
    """
    overrides = {name: parse_launch_argument(name, text) for name, text in arguments.items() if text != ""}
    pair = model_size_problem(overrides.get("model"), overrides.get("image_size"))
    if pair is not None:
        given = f"model:={overrides['model']} image_size:={overrides['image_size']}"
        raise LaunchArgumentError(f"launch arguments {given}: {pair}")
    parameters: List[Union[str, Dict[str, ParameterValue]]] = [params_file] if params_file else []
    if overrides:
        parameters.append(overrides)
    return parameters


# --------------------------------------------------------------------------- launch remappings

# Defaults of the launch arguments image_topic and detections_topic: the node's own (relative) topic names.
DEFAULT_IMAGE_TOPIC = "image"
DEFAULT_DETECTIONS_TOPIC = "detections_in"


def params_file_cameras(params_file: str) -> Optional[List[str]]:
    """The `cameras` a YAML parameter file sets (for any node key, e.g. /**), None when it sets none or the
    file cannot be read (the node then reports it)."""
    import yaml  # launch's own dependency; only the launch files need it

    try:
        document = yaml.safe_load(Path(params_file).expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(document, dict):
        return None
    for section in document.values():
        values = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(values, dict) and isinstance(values.get("cameras"), list):
            return [str(name) for name in values["cameras"]]
    return None


def parse_camera_topics(text: str) -> Dict[str, str]:
    """`front=/front/image_raw,rear=/rear/image_raw` -> {camera: image topic}.

    Raises:
      LaunchArgumentError: an item is not CAMERA=TOPIC, or names a camera twice.
    """
    topics: Dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        camera, equals, topic = item.partition("=")
        camera, topic = camera.strip(), topic.strip()
        if not equals or not camera or not topic:
            raise LaunchArgumentError(f"launch argument camera_topics:={text!r}: expected CAMERA=TOPIC items "
                                      f"separated by commas, got {item!r}")
        if camera in topics:
            raise LaunchArgumentError(f"launch argument camera_topics:={text!r}: camera {camera!r} given twice")
        topics[camera] = topic
    return topics


def launch_remappings(image_topic: str, detections_topic: str, camera_topics: str,
                      cameras: Sequence[str]) -> List[Tuple[str, str]]:
    """The remappings of the launched node's input topics.

    One unnamed camera (`cameras` [""]): `image` (and `image/compressed`) onto `image_topic`, `detections_in`
    onto `detections_topic`. Named cameras: each camera's `<camera>/image` (and `/compressed`) onto its topic
    in `camera_topics` ("front=/front/image_raw,rear=..."); the others keep `<namespace>/<camera>/image`.

    Arguments:
      cameras: the node's cameras: the `cameras` argument if given, else the params file's, else [""].
    Raises:
      LaunchArgumentError: image_topic or detections_topic given with named cameras (the node has no `image`
        topic then: the remap would be ignored), camera_topics without named cameras, or naming a camera the
        node does not have.
    """
    if list(cameras) == [""]:
        if camera_topics:
            raise LaunchArgumentError(
                f"launch argument camera_topics:={camera_topics!r} needs named cameras (cameras:=front,rear); "
                "one unnamed camera takes image_topic")
        return [("image", image_topic), ("image/compressed", f"{image_topic}/compressed"),
                ("detections_in", detections_topic)]
    named = ", ".join(cameras)
    if image_topic != DEFAULT_IMAGE_TOPIC:
        example = ",".join(f"{camera}=/{camera}/image_raw" for camera in cameras)
        raise LaunchArgumentError(
            f"launch argument image_topic:={image_topic!r} applies to one unnamed camera, and this node has the "
            f"cameras {named}: give each camera its topic with camera_topics:={example}")
    if detections_topic != DEFAULT_DETECTIONS_TOPIC:
        raise LaunchArgumentError(
            f"launch argument detections_topic:={detections_topic!r} applies to one unnamed camera, and this node "
            f"has the cameras {named}: each camera reads its detector's boxes on <namespace>/<camera>/detections_in")
    topics = parse_camera_topics(camera_topics) if camera_topics else {}
    unknown = [camera for camera in topics if camera not in cameras]
    if unknown:
        raise LaunchArgumentError(f"launch argument camera_topics:={camera_topics!r} names {unknown[0]!r}, which "
                                  f"is not one of the node's cameras {named}")
    remappings: List[Tuple[str, str]] = []
    for camera, topic in topics.items():
        remappings += [(f"{camera}/image", topic), (f"{camera}/image/compressed", f"{topic}/compressed")]
    return remappings

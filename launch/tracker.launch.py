"""Launch the SAM 2 tracker node.

    ros2 launch sam2_ros tracker.launch.py image_topic:=/camera/image_raw checkpoint:=/path/sam2.1_hiera_tiny.pt

The node's topics are relative (image, image/compressed, prompts, masks, objects, overlay, detections) and
live in `namespace`; the camera topic is remapped to `image_topic`. Parameters come from `params_file`
(config/tracker.yaml by default), then the launch arguments below, which win. Every process of the
pipeline should use the same Fast DDS profile (`fastdds_profile`) for camera-sized images.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from sam2_rt.config import MODEL_NAMES

BOOLEANS = ["true", "false"]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("sam2_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics."),
        DeclareLaunchArgument(
            "image_topic", default_value="image",
            description="Camera topic (sensor_msgs/Image), remapped onto the node's `image`; with "
                        "use_compressed:=true the node reads <image_topic>/compressed.",
        ),
        DeclareLaunchArgument(
            "use_compressed", default_value="false", choices=BOOLEANS,
            description="Subscribe to <image_topic>/compressed (sensor_msgs/CompressedImage, jpeg/png).",
        ),
        DeclareLaunchArgument("model", default_value="sam2.1_hiera_tiny", choices=list(MODEL_NAMES),
                              description="SAM 2 / SAM 2.1 model."),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Meta's .pt checkpoint of `model`; empty: the file `sam2-rt download` stores, if present. "
                        "Without a checkpoint the node refuses to activate.",
        ),
        DeclareLaunchArgument("device", default_value="auto", choices=["auto", "cuda", "cpu"],
                              description="Where the model runs; auto = cuda when available."),
        DeclareLaunchArgument("backend", default_value="eager", choices=["eager", "compile", "tensorrt"],
                              description="Model execution backend (tensorrt -> compile -> eager fallback, with a warning)."),
        DeclareLaunchArgument("precision", default_value="fp32", choices=["fp32", "bf16", "fp16"],
                              description="Compute precision of the model."),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "tracker.yaml"]),
            description="YAML file with the node's other parameters (image_size, max_objects, ...).",
        ),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"]),
            description="Fast DDS profile of the node's process (FASTDDS_DEFAULT_PROFILES_FILE); the shipped one "
                        "fits camera-sized images. Use the same in the camera's process.",
        ),
    ]
    image_topic = LaunchConfiguration("image_topic")
    tracker = Node(
        package="sam2_ros",
        executable="tracker_node",
        name="sam2_tracker",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "precision": ParameterValue(LaunchConfiguration("precision"), value_type=str),
                "use_compressed": ParameterValue(LaunchConfiguration("use_compressed"), value_type=bool),
            },
        ],
        remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
        additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": LaunchConfiguration("fastdds_profile")},
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, tracker])

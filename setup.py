"""pip project of sam2-ros.

The distribution is called ``sam2-rt`` on purpose: the ROS interface build installs an egg-info for the
ROS package ``sam2_ros``, and a pip distribution of the same name would take it for an old install of
itself and delete the generated message modules.
"""
from setuptools import find_packages, setup

TEST_REQUIRES = [
    "pytest>=8",
    # A per-test timeout (pytest.ini), and the shuffled run of the fast tier in .ci/run (--random-order-seed).
    "pytest-timeout>=2.3",
    "pytest-random-order>=1.2",
    # Static check that the sources need no Python newer than 3.10 (tests/test_ros_compat.py).
    "vermin>=1.6",
    # Property-based fuzzing of the image conversions and prompt parsing (tests/test_fuzz.py).
    "hypothesis>=6.100",
    # Meta's reference implementation, the oracle of the parity tests (sdist; build with SAM2_BUILD_CUDA=0
    # and --no-build-isolation so its build uses the torch already installed).
    "sam2==1.1.0",
    "hydra-core>=1.3.2",
    "iopath>=0.1.10",
    "torchvision==0.29.1",
    # SAMURAI's reference (build/refs/samurai, tests/test_motion.py and testkit/samurai_reference.py): its Kalman
    # filter runs on scipy, its model logs with loguru.
    "scipy==1.17.1",
    "loguru==0.7.3",
    # TensorRT-RTX build of torch-tensorrt: real TensorRT libraries on PyPI (~100 MB) that BUILD engines on a
    # CPU-only machine, so CI proves every per-frame component converts (tests/test_engines.py). It provides
    # the same module `torch_tensorrt` as the `tensorrt` extra: never install both in one environment.
    "torch-tensorrt-rtx==2.14.0",
]

setup(
    name="sam2-rt",
    version="0.1.0",
    description="Real-time promptable SAM 2 segmentation and tracking, with a ROS 2 node",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sam2_rt", "sam2_rt.*", "sam2_ros", "sam2_ros.*"]),
    install_requires=[
        "torch==2.14.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        # Pure Python (no ROS install): rosbag2 input and output of `sam2-rt track`.
        "rosbags>=0.10",
        # Progress bar of `sam2-rt track` and `sam2-rt download`; prompt files in YAML.
        "tqdm>=4.60",
        "PyYAML>=5.4",
        # EdgeTAM's RepViT-M1 trunk (sam2_rt.modeling.repvit), imported only when an EdgeTAM model is built.
        "timm==1.0.29",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        # GPU machines only: its TensorRT libraries come from NVIDIA's index, not PyPI. Not with `test`
        # (which brings torch-tensorrt-rtx, the same module).
        "tensorrt": ["torch-tensorrt==2.14.0"],
    },
    entry_points={
        "console_scripts": [
            "sam2-rt=sam2_rt.cli.commands:main",
            "sam2-ros-tracker=sam2_ros.main:main",
        ],
    },
)

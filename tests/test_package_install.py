"""The ROS package install (what colcon does): interfaces + our Python + node + launch/config in one prefix."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

VENV = Path(sys.prefix)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.skipif(not (VENV / "share" / "rosidl_default_generators").is_dir(),
                    reason="needs the ROS 2 build wheels in this environment (make setup)")
def test_full_cmake_install_serves_interfaces_node_and_our_modules(tmp_path: Path) -> None:
    # A copy of the sources: cmake refuses to export include paths that lie inside the source tree, which
    # this venv (REPO/.venv) does; in a colcon workspace the ROS install is never inside the package.
    source, build, prefix = tmp_path / "src" / "sam2_ros", tmp_path / "build", tmp_path / "install"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", "build", ".git", "out", ".cache", "__pycache__"))
    build.mkdir()
    # As a sourced ROS environment has it: rosidl finds its typesupports through AMENT_PREFIX_PATH (or the
    # install prefix, which is why the venv build of the Makefile needs neither).
    env = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", CMAKE_PREFIX_PATH=str(VENV),
               AMENT_PREFIX_PATH=str(VENV))
    run(["cmake", str(source), f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={sys.executable}"], build, env)
    run(["make", "-j2", "install"], build, env)

    for script in ("tracker_node", "demo_player"):
        installed = prefix / "lib" / "sam2_ros" / script
        assert os.access(installed, os.X_OK)
        # The interpreter cmake built for, not whatever python3 comes first on PATH.
        assert installed.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert (prefix / "share" / "sam2_ros" / "config" / "fastdds_large_images.xml").is_file()
    assert (prefix / "share" / "sam2_ros" / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "sam2_ros").is_file()
    assert not (Path("/") / "sam2_ros").exists(), "an install rule used PYTHON_INSTALL_DIR before it was set"

    site = prefix / Path(sysconfig.get_paths()["purelib"]).relative_to(sysconfig.get_paths()["data"])
    probe = (
        "import sam2_ros.msg, sam2_ros.srv, sam2_ros.conversions, sam2_rt.tracking.tracker;"
        "print(sam2_ros.msg.__file__); print(sam2_ros.conversions.__file__); print(sam2_rt.tracking.tracker.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(site)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(str(prefix)) for line in proc.stdout.split()), proc.stdout

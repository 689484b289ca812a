"""Repair the cmake exports of the ROS 2 message wheels in this environment (idempotent).

The ros-*-msgs wheels on PyPI carry the include paths of the machine that built them
(``/opt/python/cp311-cp311/include/python3.11`` and that interpreter's numpy include) in
``share/*/cmake/export_*__rosidl_generator_pyExport.cmake``. Building our own interfaces against them
then fails to find Python.h. This rewrites those paths to this interpreter's include directory and
numpy's. Run it again after installing any new ros-*-msgs wheel.
"""
from __future__ import annotations

import logging
import re
import sys
import sysconfig
from pathlib import Path

import numpy

LOG = logging.getLogger("repair_ros_wheels")
# Quoted INTERFACE_INCLUDE_DIRECTORIES value in the generated export file.
_INCLUDE_RE = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')


def repair(prefix: Path) -> int:
    """Rewrite the include paths of every rosidl_generator_py export under ``prefix/share``.

    Returns the number of files changed.
    """
    wanted = f"{sysconfig.get_paths()['include']};{numpy.get_include()}"
    changed = 0
    for path in sorted(prefix.glob("share/*/cmake/export_*__rosidl_generator_pyExport.cmake")):
        text = path.read_text()
        new_text = _INCLUDE_RE.sub(lambda m: m.group(1) + wanted + m.group(3), text)
        if new_text != text:
            path.write_text(new_text)
            changed += 1
    return changed


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    changed = repair(prefix)
    LOG.info("repaired %d rosidl_generator_py export file(s) under %s", changed, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())

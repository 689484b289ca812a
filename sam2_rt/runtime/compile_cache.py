"""torch.compile's compiled artifacts of one warm-up, kept in our cache directory so that a warm start
survives a reboot.

torch keeps what inductor compiles (FX graphs, AOT autograd entries, Triton kernels, autotuning results) in
caches under the temporary directory, which a robot loses at every boot: measured on a 2-core CPU at 128 px,
a warm-up took 172 s cold and 14.5 s with torch's caches kept. After a warm-up that compiled anything, the
compile backend saves those artifacts (`torch.compiler.save_cache_artifacts`, portable between processes and
machines of the same kind) into one file under <package cache dir>/compile, named by a key of everything
that changes them: model, weights hash, image size, precision, compiler, CUDA graphs, the shapes warmed up,
torch version and device. The next process with the same key loads the file before its warm-up
(`torch.compiler.load_cache_artifacts`): its compilations are then cache hits. A stale entry (another key or
format) or a corrupt one (checksum, or torch refuses it) is removed with one warning and rebuilt by that
warm-up. Dynamo still traces each graph in every process (seconds); only code generation is skipped.

The artifacts hold inductor's generated code, not what it compiled from it: on a CPU every kernel is C++ that
g++ compiles again (measured: a warm start from the artifacts alone took as long as the cold one). So while a
warm-up compiles, inductor's own cache directory (generated code, compiled C++ libraries, Triton kernels) is
<package cache dir>/compile/inductor as well (`kept_inductor_caches`), unless TORCHINDUCTOR_CACHE_DIR names
another one: a process after a reboot then finds the compiled kernels too.

    cache = CompileCache(default_compile_cache_dir(), key)
    cache.load()          # before the warm-up: True when artifacts were loaded
    ...                   # warm-up (compilations hit the loaded artifacts)
    cache.save()          # after it
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch

from sam2_rt.weights.checkpoint import default_cache_dir

logger = logging.getLogger(__name__)

# First bytes of an entry, then the header length (8 bytes, big-endian), the JSON header, the artifacts.
ENTRY_MAGIC = b"SAM2RT-COMPILE-ARTIFACTS\n"
ENTRY_FORMAT = 1


def default_compile_cache_dir() -> Path:
    """<package cache dir>/compile ($SAM2_RT_CACHE moves the package cache dir)."""
    return default_cache_dir() / "compile"


@contextlib.contextmanager
def kept_inductor_caches(directory: Path) -> Iterator[Optional[Path]]:
    """Inductor's on-disk caches under `directory` while the block runs, instead of the temporary directory
    (torch's default, lost at boot); a TORCHINDUCTOR_CACHE_DIR the user set is left alone (yields None).
    TORCHINDUCTOR_CACHE_DIR is as it was afterwards. Compiled code is loaded by then: later steps do not read
    the directory."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    variable = "TORCHINDUCTOR_CACHE_DIR"
    previous = os.environ.get(variable)
    # torch writes its default into the environment the first time it asks for the directory
    if previous is not None and os.path.abspath(previous) != os.path.abspath(torch_default()):
        yield None
        return
    os.environ[variable] = str(directory)
    try:
        yield Path(directory)
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous


class StaleEntry(Exception):
    """A cache file that cannot be used: not ours, another format or key, or a checksum mismatch."""


class CompileCache:
    """One cache file of compiled artifacts for `key` (a JSON-able dict of everything that changes them).

    Attributes:
      path: the file.
      loaded: artifacts of this file were handed to torch in this process (load returned True).
    """

    def __init__(self, directory: Path, key: Dict[str, Any]) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        label = "-".join(str(key.get(name, "")) for name in ("model", "image_size", "precision"))
        self.path = Path(directory) / f"{label}-{digest[:16]}.bin"
        self.loaded = False

    def _read(self) -> Optional[bytes]:
        """The artifacts of the entry, None when there is none; StaleEntry for a bad one."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        start = len(ENTRY_MAGIC) + 8
        if not data.startswith(ENTRY_MAGIC) or len(data) < start:
            raise StaleEntry("not a compile cache entry (bad magic)")
        (header_size,) = struct.unpack(">Q", data[len(ENTRY_MAGIC):start])
        try:
            header = json.loads(data[start:start + header_size].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StaleEntry(f"unreadable header ({err})") from err
        if not isinstance(header, dict) or header.get("format") != ENTRY_FORMAT:
            raise StaleEntry("written in another format")
        if header.get("key") != json.loads(json.dumps(self.key, default=str)):
            raise StaleEntry("written for another key")
        payload = data[start + header_size:]
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise StaleEntry("corrupt: the artifacts' sha256 does not match the header")
        return payload

    def load(self) -> bool:
        """Hand the entry's artifacts to torch's compile caches; True when there were some to hand over.

        A bad entry (StaleEntry, or torch refusing the artifacts) is removed with one warning: the warm-up
        then compiles from scratch and `save` writes a new one.
        """
        try:
            payload = self._read()
            if payload is None:
                return False
            try:
                torch.compiler.load_cache_artifacts(payload)
            except Exception as err:  # noqa: BLE001 - torch's loaders raise many kinds on a bad payload
                raise StaleEntry(f"torch refused the artifacts ({type(err).__name__}: {err})") from err
        except StaleEntry as err:
            logger.warning("compile cache entry %s cannot be used (%s): compiling from scratch, then replacing it",
                           self.path, err)
            self.path.unlink(missing_ok=True)
            return False
        self.loaded = True
        logger.info("compile cache: loaded %s (%.1f MiB)", self.path, len(payload) / 2**20)
        return True

    def save(self) -> Optional[Path]:
        """Write every artifact compiled or loaded in this process (atomically); None when torch has none."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return None
        payload, _ = saved
        header = json.dumps({"format": ENTRY_FORMAT, "key": self.key, "sha256": hashlib.sha256(payload).hexdigest()},
                            default=str).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temp, "wb") as file:
            file.write(ENTRY_MAGIC + struct.pack(">Q", len(header)) + header + payload)
        os.replace(temp, self.path)
        logger.info("compile cache: saved %s (%.1f MiB)", self.path, len(payload) / 2**20)
        return self.path

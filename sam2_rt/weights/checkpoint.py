"""Meta's official SAM 2 / SAM 2.1 / EdgeTAM checkpoints: table, download with resume, verified loading.

Meta's files are ``torch.save({'model': state_dict})`` of ``SAM2Base`` (EdgeTAM's too, with its RepViT trunk
and spatial perceiver); our modules use the same parameter names, so the state_dict loads with
``strict=True`` and no key remapping at all.

Meta publishes no checksums. A file is verified in two ways:
- structurally, always: every key and shape must equal those of the named config; otherwise
  ``CheckpointError`` names the missing, unexpected and mis-shaped keys and which official model the
  file looks like;
- trust on first use: ``download`` records the file's sha256 in a small JSON manifest
  (``~/.cache/sam2_rt/manifest.json`` by default, ``$SAM2_RT_CACHE`` moves the cache); later loads and
  downloads of that model name must give the same sha256.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import http.client
import json
import logging
import os
import pickle
import types
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch

from sam2_rt.modeling.config import EDGETAM_NAME, MODEL_NAMES, ModelConfig, get_config
from sam2_rt.modeling.factory import create_model
from sam2_rt.modeling.sam2 import SAM2Model

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Called with (bytes downloaded so far, total bytes or None when the server does not say).
ProgressCallback = Callable[[int, Optional[int]], None]

_SAM2_0_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM2_1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
# EdgeTAM's README points at checkpoints/edgetam.pt of its GitHub repository (no Hugging Face model id).
_EDGETAM_URL = "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, of another model, or differs from its recorded sha256."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One official checkpoint file."""

    # Model name (one of MODEL_NAMES); get_config(name) is the config the file needs.
    name: str
    # Official download address.
    url: str

    @property
    def filename(self) -> str:
        """File name of the official download, e.g. "sam2.1_hiera_tiny.pt" or "edgetam.pt"."""
        return self.url.rsplit("/", 1)[-1]

    def config(self, image_size: int = 1024) -> ModelConfig:
        """The model configuration this file fits (weights do not depend on image_size)."""
        return get_config(self.name, image_size)


def _official_url(name: str) -> str:
    if name == EDGETAM_NAME:
        return _EDGETAM_URL
    return f"{_SAM2_1_BASE_URL if name.startswith('sam2.1_') else _SAM2_0_BASE_URL}/{name}.pt"


CHECKPOINTS: Dict[str, CheckpointInfo] = {
    name: CheckpointInfo(name=name, url=_official_url(name)) for name in MODEL_NAMES
}


def checkpoint_info(name: str) -> CheckpointInfo:
    """The table entry of an official model, or CheckpointError naming the known ones."""
    if name not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint {name!r}; expected one of {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def default_cache_dir() -> Path:
    """Where downloads and the manifest live: $SAM2_RT_CACHE, else ~/.cache/sam2_rt."""
    override = os.environ.get("SAM2_RT_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "sam2_rt"


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer of `model` (names, dtypes, shapes and bytes), in state_dict order:
    the weights part of the keys of compiled programs (TensorRT engines, torch.compile artifacts)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def default_checkpoint_path(name: str) -> Path:
    """Default local path of an official checkpoint: <cache dir>/<official file name>."""
    return default_cache_dir() / checkpoint_info(name).filename


def default_manifest_path() -> Path:
    """Default trust-on-first-use manifest: <cache dir>/manifest.json."""
    return default_cache_dir() / "manifest.json"


# --- sha256 manifest (trust on first use) -------------------------------------------------------------


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Manifest:
    """JSON file of sha256 digests recorded when each model's checkpoint was first downloaded.

    Layout: ``{"checkpoints": {name: {"sha256": hex, "size": bytes, "url": str, "recorded": iso time}}}``.
    """

    def __init__(self, path: Optional[PathLike] = None) -> None:
        self.path = Path(path) if path is not None else default_manifest_path()

    def _read(self) -> Dict[str, Dict[str, object]]:
        if not self.path.exists():
            return {}
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
            entries = content["checkpoints"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"sha256 manifest {self.path} is not valid: {error}") from error
        if not isinstance(entries, dict):
            raise CheckpointError(f"sha256 manifest {self.path} is not valid: 'checkpoints' is not a mapping")
        return entries

    def recorded_sha256(self, name: str) -> Optional[str]:
        """The digest recorded for a model name, None if none was recorded yet."""
        entry = self._read().get(name)
        return None if entry is None else str(entry["sha256"])

    def record(self, name: str, sha256: str, size: int, url: str) -> None:
        """Record (or replace) the digest of a model's checkpoint; written atomically."""
        entries = self._read()
        entries[name] = {
            "sha256": sha256,
            "size": size,
            "url": url,
            "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(self.path.name + ".tmp")
        staging.write_text(json.dumps({"checkpoints": entries}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(staging, self.path)

    def check(self, name: str, path: PathLike) -> Optional[str]:
        """Compare a file with the digest recorded for name.

        Returns the file's sha256, or None when nothing is recorded for name (nothing to compare).
        Raises CheckpointError on a mismatch.
        """
        expected = self.recorded_sha256(name)
        if expected is None:
            logger.info("no sha256 recorded for %s in %s; %s is verified structurally only", name, self.path, path)
            return None
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(
                f"sha256 of {path} is {actual}, but {expected} was recorded for {name} at its first download "
                f"(manifest {self.path}). The file changed or is another file; download it again, or pass "
                f"verify_sha256=False to load a deliberately different file (e.g. fine-tuned weights)."
            )
        return actual


# --- reading and verifying ----------------------------------------------------------------------------


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read Meta's checkpoint format ``{'model': state_dict}`` safely (``torch.load(weights_only=True)``).

    Returns the state_dict on CPU. Raises CheckpointError for a missing file, an unreadable/corrupt
    file (truncated download, not a torch file, pickled code) or a file of another structure.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated, or not a weights-only file): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if not isinstance(content, Mapping) or "model" not in content:
        found = sorted(map(str, content.keys()))[:8] if isinstance(content, Mapping) else type(content).__name__
        raise CheckpointError(
            f"{path} is not a SAM 2 checkpoint: expected a dict with a 'model' state_dict (Meta's format), found {found}"
        )
    state = content["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointError(f"{path} is not a SAM 2 checkpoint: its 'model' entry is not a state_dict of tensors")
    return dict(state)


@functools.lru_cache(maxsize=None)
def expected_shapes(name: str) -> Mapping[str, Tuple[int, ...]]:
    """Keys and shapes of the state_dict of an official model (built once on the meta device: no memory)."""
    with torch.device("meta"):
        model = create_model(get_config(name))
    return types.MappingProxyType({key: tuple(value.shape) for key, value in model.state_dict().items()})


def _mismatches(
    state_shapes: Mapping[str, Tuple[int, ...]], expected: Mapping[str, Tuple[int, ...]]
) -> Tuple[List[str], List[str], List[str]]:
    """(missing keys, unexpected keys, "key: file shape vs expected shape" lines), each sorted."""
    missing = sorted(set(expected) - set(state_shapes))
    unexpected = sorted(set(state_shapes) - set(expected))
    misshaped = sorted(
        f"{key}: file {list(state_shapes[key])} vs model {list(expected[key])}"
        for key in set(expected) & set(state_shapes)
        if tuple(state_shapes[key]) != tuple(expected[key])
    )
    return missing, unexpected, misshaped


def identify_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Name of the official model whose keys and shapes the state_dict has exactly, else None."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    for name in MODEL_NAMES:
        if not any(_mismatches(shapes, expected_shapes(name))):
            return name
    return None


def _listing(title: str, items: List[str], limit: int = 10) -> str:
    shown = "\n    ".join(items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {len(items)} {title}:\n    {shown}{more}"


def verify_state_dict(state_dict: Mapping[str, torch.Tensor], name: str, source: str = "checkpoint") -> None:
    """Check that a state_dict has exactly the keys and shapes of the named model.

    Raises CheckpointError listing missing keys, unexpected keys and shape mismatches, and naming the
    official model the file matches when there is one (another size or SAM version).
    """
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    missing, unexpected, misshaped = _mismatches(shapes, expected_shapes(name))
    if not (missing or unexpected or misshaped):
        return
    message = f"{source} does not fit {name}:"
    if missing:
        message += _listing("missing keys", missing)
    if unexpected:
        message += _listing("unexpected keys", unexpected)
    if misshaped:
        message += _listing("shape mismatches", misshaped)
    actual = identify_checkpoint(state_dict)
    message += (
        f"\n  The file is a {actual} checkpoint; load it with that name."
        if actual is not None
        else "\n  It matches none of the official models."
    )
    raise CheckpointError(message)


# --- loading ------------------------------------------------------------------------------------------


def load_model(
    name: str,
    checkpoint_path: Optional[PathLike] = None,
    image_size: int = 1024,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    manifest_path: Optional[PathLike] = None,
    verify_sha256: bool = True,
) -> SAM2Model:
    """Build the named model and load a Meta checkpoint into it, strictly.

    Arguments:
      name: one of MODEL_NAMES.
      checkpoint_path: Meta-format .pt file; None = default_checkpoint_path(name) (see ``download``).
      image_size: model input side (multiple of 32); the weights fit any size.
      device, dtype: where the model lives, and float32 (the only dtype SAM2Model accepts: reduced precision is
        autocast, TrackerConfig.precision).
      manifest_path: sha256 manifest (default default_manifest_path()).
      verify_sha256: compare the file with the sha256 recorded at its first download, if any.
    Returns:
      SAM2Model (EdgeTAMModel for "edgetam") in eval mode.
    Raises:
      CheckpointError: missing/corrupt/foreign file, mismatched keys or shapes, sha256 mismatch.
    """
    config = get_config(name, image_size)
    path = Path(checkpoint_path) if checkpoint_path is not None else default_checkpoint_path(name)
    if not path.is_file():
        hint = "" if checkpoint_path is not None else f" (download it with sam2_rt.weights.checkpoint.download({name!r}, ...))"
        raise CheckpointError(f"checkpoint file not found: {path}{hint}")
    if verify_sha256:
        Manifest(manifest_path).check(name, path)
    state = read_state_dict(path)
    verify_state_dict(state, name, source=str(path))
    model = create_model(config)
    model.load_state_dict(state, strict=True)
    logger.info("loaded %s from %s", name, path)
    return model.to(device=device, dtype=dtype).eval()


def random_model(
    name: str,
    image_size: int = 1024,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> SAM2Model:
    """The named model with seeded random weights (its modules' own initialisation), in eval mode.

    For demos, tests and timing only: the masks are meaningless. The global RNG is left as it was, and
    the same seed always gives the same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(get_config(name, image_size))
    return model.to(device=device, dtype=dtype).eval()


# --- download -----------------------------------------------------------------------------------------


def _log_progress(done: int, total: Optional[int], state: Dict[str, int]) -> None:
    """Log roughly every 5% (or 64 MiB when the size is unknown)."""
    step = max(total // 20, 1) if total else 64 << 20
    if done // step > state.get("logged", -1) or done == total:
        state["logged"] = done // step
        if total:
            logger.info("downloaded %.1f / %.1f MiB (%d%%)", done / 2**20, total / 2**20, 100 * done // total)
        else:
            logger.info("downloaded %.1f MiB", done / 2**20)


def _content_range_total(header: Optional[str]) -> Optional[int]:
    """Total size from a Content-Range header ("bytes 0-9/100" or "bytes */100")."""
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _fetch(url: str, partial: Path, progress: Optional[ProgressCallback], timeout: float, chunk_bytes: int) -> None:
    """Download url into partial, resuming from its current length with an HTTP Range request."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        # 416: nothing left after offset, the partial file is already complete.
        if error.code == 416 and offset and _content_range_total(error.headers.get("Content-Range")) == offset:
            return
        raise CheckpointError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise CheckpointError(f"download of {url} failed: {error}") from error
    with response:
        if offset and response.status == 206:
            logger.info("resuming %s at %.1f MiB", url, offset / 2**20)
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            if offset:
                logger.info("server ignored the range request; downloading %s from the start", url)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        log_state: Dict[str, int] = {}
        done = offset
        try:
            with open(partial, mode) as sink:
                for chunk in iter(lambda: response.read(chunk_bytes), b""):
                    sink.write(chunk)
                    done += len(chunk)
                    _log_progress(done, total, log_state)
                    if progress is not None:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as error:
            raise CheckpointError(
                f"download of {url} interrupted at {done} bytes ({error}); call download again to resume"
            ) from error
    if total is not None and done != total:
        raise CheckpointError(f"download of {url} stopped at {done} of {total} bytes; call download again to resume")


def download(
    name: str,
    dest: Optional[PathLike] = None,
    url: Optional[str] = None,
    manifest_path: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    timeout: float = 60.0,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download an official checkpoint, resuming an interrupted download, and verify it.

    The bytes go to ``<dest>.part`` first (an HTTP Range request continues it after an interruption),
    then the file is checked structurally for ``name``, its sha256 is compared with the manifest (or
    recorded there on first download), and it is renamed to ``dest``. An existing ``dest`` is verified,
    not downloaded again.

    Arguments:
      name: one of MODEL_NAMES.
      dest: target file, or an existing directory to put the official file name in
        (default default_checkpoint_path(name)).
      url: download address (default: the official one; another server for mirrors and tests).
      manifest_path: sha256 manifest (default default_manifest_path()).
      progress: called with (bytes so far, total bytes or None) after every chunk, e.g. to draw a bar;
        progress is also logged every ~5%.
      timeout: socket timeout in seconds.
    Returns:
      Path of the verified checkpoint.
    Raises:
      CheckpointError: network failure, incomplete transfer, wrong file, sha256 mismatch.
    """
    info = checkpoint_info(name)
    source = url or info.url
    target = Path(dest) if dest is not None else default_checkpoint_path(name)
    if target.is_dir():
        target = target / info.filename
    manifest = Manifest(manifest_path)

    if target.exists():
        logger.info("%s already exists; verifying instead of downloading", target)
        candidate = target
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        candidate = target.with_name(target.name + ".part")
        logger.info("downloading %s from %s to %s", name, source, target)
        _fetch(source, candidate, progress, timeout, chunk_bytes)

    verify_state_dict(read_state_dict(candidate), name, source=str(candidate))
    digest = sha256_file(candidate)
    recorded = manifest.recorded_sha256(name)
    if recorded is not None and recorded != digest:
        raise CheckpointError(
            f"sha256 of {candidate} is {digest}, but {recorded} was recorded for {name} at its first download "
            f"(manifest {manifest.path}); the file was not accepted."
        )
    if candidate != target:
        os.replace(candidate, target)
    if recorded is None:
        manifest.record(name, digest, target.stat().st_size, source)
        logger.info("recorded sha256 %s of %s in %s", digest, name, manifest.path)
    return target

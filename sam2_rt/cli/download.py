"""`sam2-rt download`: Meta's checkpoints into the cache (resumed, sha256 recorded and checked); --list."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from sam2_rt.cli.emit import emit
from sam2_rt.cli.errors import CliError, UsageError
from sam2_rt.cli.parser import DEFAULT_MODEL
from sam2_rt.modeling.config import MODEL_NAMES
from sam2_rt.weights.checkpoint import CHECKPOINTS, default_cache_dir, download

logger = logging.getLogger(__name__)


def _url_of(names: Sequence[str], mirror: Optional[str]) -> dict:
    """Model name -> download address: Meta's, or <mirror>/<official file name>."""
    if mirror is None:
        return {name: CHECKPOINTS[name].url for name in names}
    return {name: f"{mirror.rstrip('/')}/{CHECKPOINTS[name].filename}" for name in names}


def run_download(args: argparse.Namespace) -> int:
    unknown = [name for name in args.names if name not in MODEL_NAMES]
    if unknown:
        raise UsageError("sam2-rt download", f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    folder = Path(args.dest).expanduser() if args.dest else default_cache_dir()
    if args.list:
        from sam2_rt.weights.listing import list_checkpoints

        names = args.names or list(MODEL_NAMES)
        rows = list_checkpoints(folder, names, _url_of(names, args.mirror), timeout=args.timeout)
        emit(f"{'model':<22} {'size':>10}  {'status':<30} file")
        for row in rows:
            size = "?" if row.remote_bytes is None else f"{row.remote_bytes / 2**20:.1f} MiB"
            status = f"present, sha256 {row.sha256_state}" if row.present else "not downloaded"
            emit(f"{row.name:<22} {size:>10}  {status:<30} {row.path}")
        if any(row.remote_bytes is None for row in rows):
            logger.warning("sizes marked ? could not be asked from the server (offline, or it does not say)")
        return 0
    names = args.names or [DEFAULT_MODEL]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create the folder {folder}: {error.strerror or error}") from None
    urls = _url_of(names, args.mirror)
    for name in names:
        path = download(name, folder, url=urls[name], progress=_download_bar(name, args.quiet), timeout=args.timeout)
        emit(f"{name}: {path}")
    if args.dest and folder.resolve() != default_cache_dir().resolve():
        logger.info("files outside %s are not found by default: pass --checkpoint FILE to `track`, or the "
                    "node's checkpoint parameter", default_cache_dir())
    return 0


def _download_bar(name: str, quiet: bool) -> Callable[[int, Optional[int]], None]:
    """A progress callback of `sam2_rt.weights.checkpoint.download` drawing a tqdm bar in bytes."""
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=quiet, file=sys.stderr,
               dynamic_ncols=True)

    def update(done: int, total: Optional[int]) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update

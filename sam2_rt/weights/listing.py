"""What `sam2-rt download --list` shows: each official checkpoint's size on its server, its local file and
whether that file is the one whose sha256 was recorded at its first download (`sam2_rt.weights.checkpoint`)."""
from __future__ import annotations

import concurrent.futures
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from sam2_rt.weights.checkpoint import CHECKPOINTS, Manifest, _content_range_total, sha256_file


@dataclass(frozen=True)
class CheckpointStatus:
    """One row of the listing."""

    name: str
    url: str
    remote_bytes: Optional[int]  # from the server (None: unreachable or it does not say)
    path: Path  # where the file is looked for
    present: bool
    # "verified" (sha256 = recorded), "MISMATCH" (sha256 differs from the record), "unrecorded" (no sha256
    # recorded for this model: downloaded elsewhere or copied in), or "" when the file is absent.
    sha256_state: str


def remote_size(url: str, timeout: float) -> Optional[int]:
    """Size in bytes of the file at url, from a one-byte range request (None when unknown/unreachable)."""
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_range_total(response.headers.get("Content-Range"))
            length = response.headers.get("Content-Length")
            if total is None and response.status == 200 and length and length.isdigit():
                total = int(length)  # a server that ignores Range answers with the whole file
            return total
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None


def list_checkpoints(
    folder: Path, names: Sequence[str], url_of: dict, manifest_path: Optional[Path] = None, timeout: float = 5.0
) -> List[CheckpointStatus]:
    """The status of each named model's checkpoint in `folder` (its official file name there).

    Arguments:
      folder: where the files are (the download cache by default).
      names: model names (keys of CHECKPOINTS).
      url_of: model name -> download address (official or mirror).
      manifest_path: sha256 manifest (default: the cache's).
      timeout: seconds per size request; the requests run in parallel.
    """
    manifest = Manifest(manifest_path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        sizes = list(pool.map(lambda name: remote_size(url_of[name], timeout), names))
    rows = []
    for name, size in zip(names, sizes):
        path = folder / CHECKPOINTS[name].filename
        state = ""
        if path.is_file():
            recorded = manifest.recorded_sha256(name)
            state = "unrecorded" if recorded is None else ("verified" if sha256_file(path) == recorded else "MISMATCH")
        rows.append(CheckpointStatus(name, url_of[name], size, path, path.is_file(), state))
    return rows

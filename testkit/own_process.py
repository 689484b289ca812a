"""Run a reference oracle script in a child process: the reference packages all name their module `sam2` (Meta's
SAM 2, EdgeTAM, SAMURAI), so each runs alone, its own directory first on sys.path (see the scripts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict


def run_script(script: str, name: str, inputs: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """`python script IN OUT` with `inputs` saved to IN (torch.save), its OUT loaded back.

    Arguments:
      script: the oracle script (its `__file__`); it reads IN and writes OUT.
      name: who the reference is, for the error message and the file names ("EdgeTAM", "SAMURAI").
      inputs: what the script reads.
      folder: where IN and OUT go.
    Raises:
      RuntimeError: the script failed; its output's tail is in the message.
    """
    import torch

    stem = name.lower()
    inputs_path, outputs_path = folder / f"{stem}_in.pt", folder / f"{stem}_out.pt"
    torch.save(inputs, inputs_path)
    done = subprocess.run([sys.executable, script, str(inputs_path), str(outputs_path)],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{name}'s reference failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return torch.load(outputs_path, weights_only=False)

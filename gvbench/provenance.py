"""Where a result came from: versions, the commit of the code, and when.

Every results file (sweeps, training curves, presets, reports) carries these attributes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import torch

from gvbench.version import __version__


def git_commit() -> str:
    """The commit of the gvbench checkout in use (``-dirty`` with local changes), or ``unknown``."""
    try:
        root = Path(__file__).resolve().parent.parent  # the checkout above gvbench/
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def stamp() -> dict[str, Any]:
    """Attributes to put on a results Dataset."""
    return {
        "gvbench_version": __version__,
        "git_commit": git_commit(),
        "torch_version": str(torch.__version__),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }

"""Files written whole or not at all.

The content is built in memory first, then written to a temporary file beside the target and
renamed over it, so a reader, a killed process or a full disk never leaves half a file: the
previous version stays intact and no temporary is left behind. Files are created with the
mode the user's umask allows (``0o666 & ~umask``), like ``open(path, "w")``.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_torch", "write_bytes"]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def write_bytes(data: bytes | memoryview, path: str | os.PathLike[str]) -> None:
    """Write ``data`` to ``path`` atomically.

    Raises:
        OSError: with a message that names the path; for a full disk (or quota), one that says
            so and that the previous file was left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = None
    try:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(descriptor, view) :]
        os.close(descriptor)
        descriptor = None
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise OSError(
                error.errno,
                f"no space left on the device to write {path} ({len(data)} bytes); "
                "the previous version was left as it was: free some space and rerun",
            ) from None
        raise
    finally:
        if descriptor is not None:
            os.close(descriptor)
        if tmp.exists():
            tmp.unlink()


def save_torch(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save(dict(state))`` to ``path``, atomically (see :func:`write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    write_bytes(buffer.getbuffer(), path)

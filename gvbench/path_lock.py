"""One writer per results path: a lock file that a crashed run does not leave stuck.

``<path>.lock`` holds the owner's host, process id and start time, created exclusively
(``O_EXCL``). A second run on the same path is refused with a message naming the owner. A
lock is stale, and taken over with a warning, when its process is gone (same host) or when
it has not been refreshed for ``STALE_SECONDS`` (another host, which cannot be asked);
owners refresh it with :meth:`PathLock.refresh` as they work.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

STALE_SECONDS = 600.0
# An empty lock this old was never going to be written.
EMPTY_SECONDS = 5.0


class PathInUseError(RuntimeError):
    """Another live run writes this results path."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PathLock:
    """``with PathLock(path):`` — exclusive use of the results file ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        self.file = path.parent / f"{path.name}.lock"
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def _stale(self, holder: dict[str, Any]) -> bool:
        try:
            age = time.time() - self.file.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") == self.owner["host"] and isinstance(holder.get("pid"), int):
            # This very process counts as alive: two sweeps of one process on one path
            # (threads, a nested call) would lose each other's cells just the same.
            return not _alive(holder["pid"])
        return age > STALE_SECONDS

    def acquire(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    if not self._stale({}) and not self._abandoned_empty():
                        raise PathInUseError(
                            f"{self.file} is not a lock gvbench can read (another program's, "
                            "or one being written); if no run is writing "
                            f"{self.file.with_suffix('')}, remove {self.file}"
                        ) from None
                    holder = {}
                elif not self._stale(holder):
                    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
                    raise PathInUseError(
                        f"{self.file.with_suffix('')} is being written by process "
                        f"{holder.get('pid')} on {holder.get('host')} (since {started}); "
                        f"wait for it, or choose another path (remove {self.file} only if "
                        "that run is gone)"
                    ) from None
                gone = f"process {holder['pid']} on {holder['host']}" if holder else "unreadable"
                warnings.warn(
                    f"{self.file}: taking over the lock of a run that is gone ({gone})",
                    stacklevel=3,
                )
                self.file.unlink(missing_ok=True)
                continue
            try:
                with os.fdopen(descriptor, "w") as handle:
                    json.dump(self.owner, handle)
            except BaseException:  # a full disk: no empty lock left to block the rerun
                self.file.unlink(missing_ok=True)
                raise
            return
        raise PathInUseError(f"{self.file} could not be taken (another run took it first)")

    def _abandoned_empty(self) -> bool:
        """An empty lock older than :data:`EMPTY_SECONDS`: its owner died between creating it
        and writing it (an older gvbench on a full disk), since a write takes microseconds."""
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            return True
        return stat.st_size == 0 and time.time() - stat.st_mtime > EMPTY_SECONDS

    def refresh(self) -> None:
        """Show the lock is alive (for runs on other hosts that judge it by its age)."""
        try:
            os.utime(self.file)
        except FileNotFoundError:
            pass

    def _holder(self) -> dict[str, Any] | None:
        """The lock's owner as written by :meth:`acquire`, or None where the file is not such a
        lock (hand-made, another program's, or caught between its creation and its write)."""
        try:
            holder = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None
        fields = {"host": str, "pid": int, "started": (int, float)}
        if not isinstance(holder, dict) or not all(
            isinstance(holder.get(key), kind) and not isinstance(holder.get(key), bool)
            for key, kind in fields.items()
        ):
            return None
        if not 0 <= holder["started"] < 1e11:  # a time the clock can show (NaN fails too)
            return None
        return holder

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and (holder["pid"], holder["host"]) == (
            self.owner["pid"],
            self.owner["host"],
        ):
            self.file.unlink(missing_ok=True)

    def __enter__(self) -> PathLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

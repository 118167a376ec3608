r"""Memory budgets, and how many gradient draws one pass may hold within one.

A pass of R draws holds, at its peak, R copies of the measured parameters, the activations
autograd keeps for the backward pass of its R · B · K evaluations of the model, and R gradient
rows: a peak :math:`M(R) = M_0 + R\,m` that grows with R. R is therefore bounded by what a
pass is measured to take, not by a count of examples: once per cell, a pilot pass of one draw
and one of two draws (both on copies, so that nothing of the cell moves) give

.. math::
    \hat m = M(2) / 2 = m + M_0 / 2,

and a pass holds at most the largest power of two :math:`R` with :math:`R\,\hat m \le`
the budget. For R ≥ 2, :math:`R\,\hat m \ge M_0 + R\,m`, so the extrapolation errs on the safe
side; one draw is checked against the budget directly, and a cell whose one draw does not fit
fails with a line that names what it needs (:class:`MemoryBudgetError`). Powers of two keep the
limit the same when a measurement moves by a few percent.

The peak is measured as the process holds it: on the CPU, the growth of the resident set's
high-water mark over the pass (Linux resets it through ``/proc/self/clear_refs``, after glibc
has handed freed pages back, so that a pass shows what it allocates rather than pages already
held); on CUDA, torch's peak of allocated bytes. Both counters are the process's, so another
thread's work during a pilot adds to it (the limit errs lower), and pilots themselves run one
at a time. Where neither counter exists (a CPU that is not Linux), passes are not sized by
memory.

The default budget is :data:`SAFE_FRACTION` of the memory available where the cell runs: the
RAM the kernel reports available, less where a cgroup (a container, a SLURM job), a Dask
worker's memory limit (past which its nanny restarts it) or an address-space limit
(``ulimit -v``) leaves less; on CUDA, the device's free memory and what
torch's cache holds unused.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import os
import re
import resource
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gvbench.estimators import Estimator

# The share of the available memory a pass may take by default: the rest is for the process
# itself (its other tensors, malloc's slack) and whatever else the machine runs.
SAFE_FRACTION = 0.5
# Two batched draws may take several plain draws' memory (vmap stacks the parameters and
# buffers, and may copy what a plain pass broadcasts): their pilot runs only where this many
# plain draws fit the budget, so that it stays within the memory available.
BATCHED_OVERHEAD = 4
# The sizes ``memory`` accepts: at least a mebibyte, at most a pebibyte.
MIN_MEMORY, MAX_MEMORY = 2**20, 2**50
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?", re.IGNORECASE)
# Pilots reset and read process-wide counters: one at a time.
_PILOT = threading.Lock()


class MemoryBudgetError(ValueError):
    """One draw of a cell needs more memory than its budget allows."""


def parse_memory(value: int | str, name: str = "memory") -> int:
    """Bytes from a size like ``"4G"``, ``"512M"``, ``"1.5GiB"`` (binary units) or an integer
    number of bytes, between :data:`MIN_MEMORY` and :data:`MAX_MEMORY`."""
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = math.floor(float(match[1]) * _UNITS[match[2].upper()])
    if size is None or not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(
            f"{name} must be a size like 4G or 512M (bytes, or K, M, G, T, P: binary units) "
            f"from 1M to 1P, got {value!r}"
        )
    return size


def format_bytes(size: float) -> str:
    """``size`` bytes in binary units, three significant digits: ``"1.5 GiB"``."""
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 999.5 or unit == "PiB":
            return f"{size:.3g} {unit}"
    raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The memory a pass may take, and where that number comes from."""

    size: int
    origin: str  # "memory=4 GiB", or "half the 20.1 GiB of RAM available"

    def __str__(self) -> str:
        return f"the memory budget of {format_bytes(self.size)}, {self.origin}"


def memory_budget(memory: int | None, device: torch.device) -> Budget:
    """The budget ``memory`` bytes set, or by default :data:`SAFE_FRACTION` of the memory
    available on ``device`` now."""
    if memory is not None:
        return Budget(memory, f"memory={format_bytes(memory)}")
    available, where = available_memory(device)
    fraction = "half" if SAFE_FRACTION == 0.5 else f"{SAFE_FRACTION:g} of"
    return Budget(
        int(SAFE_FRACTION * available), f"{fraction} the {format_bytes(available)} {where}"
    )


def available_memory(device: torch.device) -> tuple[int, str]:
    """The bytes a new allocation on ``device`` can take now, and what bounds them."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + cached, f"free on {device}"
    bounds = [(_ram_available(), "of RAM available")]
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        bounds.append((cgroup, "left under the cgroup's memory limit"))
    worker = _dask_worker_headroom()
    if worker is not None:
        bounds.append((worker, "left under the Dask worker's memory limit"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = _status_bytes("VmSize") or 0
        bounds.append((max(0, soft - used), "left under the address-space limit, ulimit -v"))
    return min(bounds)


def _ram_available() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None if unlimited."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                files = ("memory.max", "memory.current")
                roots = [Path("/sys/fs/cgroup")]
            elif "memory" in controllers.split(","):
                files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
                roots = [Path("/sys/fs/cgroup/memory")]
            else:
                continue
            # Inside a container the cgroup's own folder is the root of the mount.
            for folder in (roots[0] / path.lstrip("/"), roots[0]):
                limit, usage = (folder / files[0]), (folder / files[1])
                if limit.exists() and usage.exists():
                    text = limit.read_text().strip()
                    if text != "max" and int(text) < _physical_memory():
                        return max(0, int(text) - int(usage.read_text()))
                    break
    return None


def _dask_worker_headroom() -> int | None:
    """Bytes this process may still take before its Dask nanny restarts it: the worker's
    memory limit times its ``terminate`` fraction, less its resident set. The workers of a
    LocalCluster share the machine's RAM, each with its share as its limit, so that the RAM
    available alone would let each of them size passes to half of all of it. None outside
    a worker's task, or for a worker without a limit."""
    if "distributed" not in sys.modules:  # no worker can be running this process
        return None
    import dask
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return None
    limit = worker.memory_manager.memory_limit
    if not limit:
        return None
    # False: the nanny never restarts the worker, whose limit still stands for its pausing.
    fraction = dask.config.get("distributed.worker.memory.terminate", 1.0) or 1.0
    return max(0, int(limit * fraction) - (_status_bytes("VmRSS") or 0))


def _physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _status_bytes(field: str) -> int | None:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``VmSize``), None elsewhere."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def _release_free_memory() -> None:
    """Hand the pages malloc holds free back to the system (glibc), so that a pass's
    allocations show as growth of the resident set."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def peak_memory(run: Callable[[], object], device: torch.device) -> int | None:
    """The bytes ``run()`` adds, at its peak, to what the process holds on ``device``; None
    where this platform cannot say (see the module's docstring)."""
    with _PILOT:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start = torch.cuda.memory_allocated(device)
            run()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - start
        if device.type != "cpu":
            return None
        _release_free_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark := the RSS
        except OSError:
            return None
        start, mark = _status_bytes("VmRSS"), _status_bytes("VmHWM")
        if start is None or mark is None or mark > start + 2**20:  # the reset did not happen
            return None
        run()
        return max(0, (_status_bytes("VmHWM") or 0) - start)


@dataclasses.dataclass(frozen=True)
class PassMemory:
    """What a cell's pilot passes took.

    Attributes:
        one_draw: the peak of a pass of one draw, in bytes.
        two_draws: the peak of a batched pass of two draws (None: not measured, since the
            budget it was asked for had no room for it).
        batches: whether vmap makes these draws (False: one plain pass at a time, so that a
            pass holds one draw's memory whatever its size).
    """

    one_draw: int
    two_draws: int | None = None
    batches: bool = True

    def limit(self, budget: Budget) -> int | None:
        """The largest power of two R with R · two_draws / 2 <= the budget (None: any R)."""
        if not self.batches:
            return None
        if self.two_draws is None:
            return 1
        fit = max(1, int(2 * budget.size // max(self.two_draws, 1)))
        return 1 << (fit.bit_length() - 1)

    def describe(self, what: str, budget: Budget) -> str:
        limit = self.limit(budget)
        measured = (
            f"{format_bytes(self.two_draws / 2)} a draw measured"
            if self.two_draws is not None
            else f"{format_bytes(self.one_draw)} for one draw measured"
        )
        plural = "draw" if limit == 1 else "draws"
        return f"{what}: {limit} {plural} per pass, the most that fit {budget}; {measured}"


class PassSizes:
    """Each cell's pass memory, measured once, and the pass size a budget allows it.

    A cell is an estimator with its options at a batch size. Its ``pilot(1)`` makes a pass
    of one plain draw, ``pilot(2)`` a batched pass of two, and says whether vmap could batch
    them; a pilot must leave the cell as it found it (its generator, its estimator's state,
    torch's global generator). The pilot of two draws runs when a budget first has room for
    it (:data:`BATCHED_OVERHEAD`).
    """

    def __init__(self, task: str, device: torch.device) -> None:
        self.task, self.device = task, device
        self._memory: dict[tuple[Any, ...], PassMemory | None] = {}
        self._budgets: dict[tuple[Any, ...], Budget] = {}  # the one each cell was last sized to

    def __getstate__(self) -> dict[str, Any]:
        # Copies: a cell may add to them while the task is pickled.
        return {**self.__dict__, "_memory": dict(self._memory), "_budgets": dict(self._budgets)}

    def _cell(self, estimator: Estimator, batch_size: int) -> tuple[tuple[Any, ...], str]:
        """The cell's key, and its name in what is said of it."""
        options = sorted(estimator.options.items())
        key = (estimator.name, tuple((name, repr(value)) for name, value in options), batch_size)
        hyper = "".join(f" {name}={value}" for name, value in options)
        return key, f"{self.task}: {estimator.name}{hyper} at batch size {batch_size}"

    def limit(
        self,
        estimator: Estimator,
        batch_size: int,
        memory: int | None,
        pilot: Callable[[int], bool],
    ) -> int | None:
        """The most draws one pass of the cell may hold within the budget ``memory`` sets
        (None: any, or memory cannot be measured here); 1 where one draw does not fit, which
        its passes then refuse (:meth:`admit`)."""
        key, _ = self._cell(estimator, batch_size)
        if key not in self._memory:
            one = peak_memory(lambda: pilot(1), self.device)
            self._memory[key] = None if one is None else PassMemory(one)
        sized = self._memory[key]
        if sized is None:
            return None
        budget = memory_budget(memory, self.device)
        self._budgets[key] = budget
        room = BATCHED_OVERHEAD * sized.one_draw <= budget.size
        if sized.batches and sized.two_draws is None and room:
            batched: list[bool] = []
            two = peak_memory(lambda: batched.append(pilot(2)), self.device)
            sized = dataclasses.replace(sized, two_draws=two, batches=batched == [True])
            self._memory[key] = sized
        return sized.limit(budget)

    def admit(self, estimator: Estimator, draws: int, batch_size: int, notes: list[str]) -> None:
        """Before a pass of ``draws`` draws of the cell: where the budget it was sized to bounds
        the pass, say so once (a warning, kept in ``notes``); nothing for a cell not sized.

        Raises:
            MemoryBudgetError: one draw of the cell needs more than that budget.
        """
        key, what = self._cell(estimator, batch_size)
        sized, budget = self._memory.get(key), self._budgets.get(key)
        if sized is None or budget is None:
            return
        if sized.one_draw > budget.size:
            raise MemoryBudgetError(
                f"{what} needs {format_bytes(sized.one_draw)} for one draw, more than "
                f"{budget}: raise it with --memory (memory= in the API), or lower k or the "
                "batch size"
            )
        said = sized.describe(what, budget)
        if sized.limit(budget) == draws and said not in notes:
            notes.append(said)
            warnings.warn(said, stacklevel=4)

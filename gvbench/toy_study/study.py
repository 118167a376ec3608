"""The toy study: the paper's τ × K sweep of its toy and Figure 1's simplex, and the field's
estimators on two toys, at a preset; its claims and report section."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import xarray as xr

from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep
from gvbench.leaderboard.column import Column
from gvbench.report.builder import Report
from gvbench.report.claims import Claim
from gvbench.simplex import simplex_sweep
from gvbench.study import PresetRun, Study
from gvbench.tasks.toy import Toy
from gvbench.toy_study.claims import field_claims, toy_claims
from gvbench.toy_study.leaderboard import toy_columns
from gvbench.toy_study.presets import (
    FIELD_ESTIMATORS,
    FIELD_K,
    FIELD_TASKS,
    FIELD_TAU,
    FIELD_TITLES,
    PRESETS,
    TOY_ESTIMATORS,
)
from gvbench.toy_study.report import field_section, toy_section


class ToyStudy(Study):
    name = "toy"
    title = "the paper's toy (§5.1, Figure 1) and the field's estimators on two toys"
    presets = PRESETS
    order = 10

    def reproduce(self, preset: str, folder: Path, run: PresetRun) -> dict[str, str]:
        """The sweeps at ``preset``; the toy stays on the CPU (it is dispatch-bound)."""
        toy = self.preset(preset)
        where = {"seed": run.seed, "executor": run.executor, "progress": run.progress}
        sweep(
            "toy",
            estimators=list(TOY_ESTIMATORS),
            tau=list(toy.tau),
            k=list(toy.k),
            reps=toy.reps,
            path=folder / "toy.nc",
            **where,
        )
        simplex = simplex_sweep(
            toy.simplex_resolution,
            tau=toy.simplex_tau,
            k=(toy.simplex_k,),
            reps=toy.simplex_reps,
            folder=folder / "simplex-points",
            **where,
        )
        write_atomic(simplex, folder / "simplex.nc")
        files = {"toy": "toy.nc", "simplex": "simplex.nc"}
        for name, options in FIELD_TASKS.items():
            sweep(
                Toy(**options),
                estimators=list(FIELD_ESTIMATORS),
                tau=list(FIELD_TAU),
                k=list(FIELD_K),
                reps=toy.reps,
                path=folder / f"{name}.nc",
                warmup=toy.field_warmup,
                **where,
            )
            files[name] = f"{name}.nc"
        return files

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """Its column of ``gvbench leaderboard`` (:mod:`gvbench.toy_study.leaderboard`)."""
        return toy_columns(preset)

    def owns(self, name: str) -> bool:
        return name in ("toy", "simplex", *FIELD_TASKS)

    def check(self, data: Mapping[str, xr.Dataset]) -> None:
        for name, ds in data.items():
            grid = "point" in ds.dims  # a sweep over a grid of tasks: the simplex's kind
            if grid != (name == "simplex"):
                raise ValueError(
                    f"files.{name} is a sweep of "
                    + ("a grid of tasks (a simplex sweep)" if grid else "one task")
                    + f"; the {name} entry needs "
                    + ("a simplex sweep" if name == "simplex" else "a sweep of one task")
                )

    def claims(self, data: Mapping[str, xr.Dataset]) -> list[Claim]:
        claims = toy_claims(data["toy"]) if "toy" in data else []
        for name in FIELD_TITLES:
            if name in data:
                claims += field_claims(data[name], name)
        return claims

    def report(self, report: Report, data: Mapping[str, xr.Dataset]) -> None:
        if "toy" in data:
            toy_section(report, data["toy"], data.get("simplex"))
        for name in FIELD_TITLES:
            if name in data:
                field_section(report, name, data[name])


TOY = ToyStudy()

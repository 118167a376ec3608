"""The reproduction report: the paper's claims decided from a run's results, its figures
(PNG and PDF), its tables (CSV) and one self-contained HTML page, in one folder.

:func:`build_report` reads what :func:`gvbench.reproduce.reproduce` wrote (its
``reproduction.json`` names the files); it runs no estimator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gvbench import provenance
from gvbench.atomic_files import write_bytes
from gvbench.harness.compare import (
    COSTS,
    UNITS,
    best_at_budget,
    cost_points,
    frontier,
    variance_ratio,
)
from gvbench.report.claims import (
    HOLDS,
    Claim,
    field_claims,
    listops_claims,
    toy_claims,
    vae_claims,
)
from gvbench.report.figures import (
    over_seeds,
    plot_listops_accuracy,
    plot_training_variance,
    plot_vae_bound,
)
from gvbench.report.page import figure_block, render, table_block, write_page

__all__ = ["MANIFEST", "Claim", "build_report", "read_manifest"]

MANIFEST = "reproduction.json"


def _plus_minus(mean: pd.Series, se: pd.Series) -> pd.Series:
    return pd.Series(
        [f"{m:.4g} ± {s:.2g}" if np.isfinite(m) else "—" for m, s in zip(mean, se, strict=True)],
        index=mean.index,
    )


def _seed_table(values: xr.DataArray, dims: list[str]) -> pd.DataFrame:
    """Mean, SE (sample sd / √n) and n over seeds, one row per cell of ``dims``."""
    mean, se, n = over_seeds(values)
    table = xr.Dataset({"mean": mean, "se": se, "seeds": n}).to_dataframe()
    return table.reset_index()[[*dims, "mean", "se", "seeds"]]


class _Report:
    """Collects figures, tables and sections while a report is built."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "tables").mkdir(parents=True, exist_ok=True)
        self.sections: list[tuple[str, list[str]]] = []

    def section(self, name: str) -> list[str]:
        self.sections.append((name, []))
        return self.sections[-1][1]

    def figure(self, blocks: list[str], name: str, draw: Callable[[], Any], caption: str) -> None:
        from gvbench.plots import save_figure

        figure = draw()
        figure = getattr(figure, "figure", figure)  # a seaborn grid or a figure
        png, pdf = save_figure(figure, self.folder / "figures" / name, ("png", "pdf"))
        blocks.append(figure_block(png, caption, Path("figures") / pdf.name))

    def table(
        self,
        blocks: list[str],
        name: str,
        title: str,
        data: pd.DataFrame,
        shown: pd.DataFrame | None = None,
    ) -> None:
        path = self.folder / "tables" / f"{name}.csv"
        write_bytes(data.to_csv(index=False).encode(), path)
        blocks.append(table_block(title, data if shown is None else shown, f"tables/{path.name}"))


def _toy(report: _Report, toy: xr.Dataset, simplex: xr.Dataset | None) -> None:
    from gvbench.plots import plot_frontier, plot_gumbel_rao_advantage, plot_metric, plot_simplex

    blocks = report.section("Toy problem (paper §5.1, Figure 1)")
    reps = toy.attrs.get("reps", "?")
    report.figure(
        blocks,
        "toy-variance-ratio",
        lambda: plot_gumbel_rao_advantage(toy),
        f"Var ST-GS / Var GR-MCK against τ, one line per K; N = {reps} draws per cell, "
        "95% bands by the delta method. Above 1: Gumbel-Rao has the lower variance.",
    )
    for metric, words in (
        ("variance", "trace of the gradient covariance"),
        ("bias2", "squared bias against the exact gradient"),
        ("mse", "mean squared error against the exact gradient"),
    ):
        report.figure(
            blocks,
            f"toy-{metric}",
            lambda m=metric: plot_metric(toy, m),
            f"Toy problem: {words}, per estimator, against τ and K (N = {reps} draws "
            "per cell; 95% bands; the axis spans 6 decades, smaller values marked ▼).",
        )
    for cost in COSTS:
        report.figure(
            blocks,
            f"toy-frontier-{cost}",
            lambda cost=cost: plot_frontier(toy, cost),
            f"The variance–cost plane ({UNITS[cost]}): each estimator at each K, the Pareto "
            "front of the unbiased estimators dashed. At equal cost lower is better: a budget "
            "C buys C/c draws of an estimator of cost c.",
        )
    points = frontier(cost_points(toy.isel(batch_size=[0])))
    best = best_at_budget(points, "mse")
    report.table(
        blocks,
        "toy-best-at-budget",
        "Lowest MSE within each budget (objective evaluations per gradient; a budget C "
        "averages C/c draws of an estimator of cost c; z: best against runner-up)",
        best,
        best.round(6),
    )
    if simplex is not None:
        report.figure(
            blocks,
            "toy-simplex",
            lambda: plot_simplex(simplex),
            "The paper's Figure 1: log₁₀ of ST-GS's over GR-MCK's gradient variance at "
            "every point of the 3-simplex, per τ.",
        )
    ds = toy.isel(batch_size=0)
    compared = variance_ratio(ds)
    ratio = compared["ratio"]
    ratio_se = ratio * compared["log_se"]  # delta method, on the ratio's own scale
    table = xr.Dataset({"ratio": ratio, "ratio_se": ratio_se}).to_dataframe().reset_index()
    table = table[["tau", "k", "ratio", "ratio_se"]]
    shown = table.assign(value=_plus_minus(table["ratio"], table["ratio_se"])).pivot(
        index="tau", columns="k", values="value"
    )
    report.table(
        blocks, "toy-variance-ratio", "Var ST-GS / Var GR-MCK (rows τ, columns K)", table, shown
    )
    metrics = ds[["label", "variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se"]]
    long = metrics.to_dataframe().reset_index().dropna(subset=["variance"])
    long = long[
        [
            "estimator",
            "label",
            "tau",
            "k",
            "variance",
            "variance_se",
            "bias2",
            "bias2_se",
            "mse",
            "mse_se",
        ]
    ]
    report.table(
        blocks,
        "toy-metrics",
        "Every toy cell (variance, bias², MSE ± SE)"
        + (f": the first 40 of {len(long)} rows, all in the CSV" if len(long) > 200 else ""),
        long,
        long.head(40) if len(long) > 200 else long,
    )


FIELD_TITLES = {
    "field-toy": "the paper's toy (one ternary variable)",
    "field-binary": "a binary toy (four Bernoulli variables)",
}


def _field(report: _Report, name: str, ds: xr.Dataset) -> None:
    """The field's estimators since 2017 on one toy: every cell with its cost, the
    variance–cost plane, decoupled ST's (τ_f, τ_b) grid, and what did not apply."""
    from gvbench.harness.compare import option_grid
    from gvbench.plots import plot_frontier, plot_option_grid

    blocks = report.section(f"Beyond the paper: the field's estimators on {FIELD_TITLES[name]}")
    reps = ds.attrs.get("reps", "?")
    report.figure(
        blocks,
        f"{name}-frontier",
        lambda: plot_frontier(ds, "evaluations"),
        f"Variance against objective evaluations per draw (N = {reps} draws per cell; the "
        "stateful estimators adapted for "
        f"{ds.attrs.get('warmup', '?')} steps first, then frozen); the Pareto front of the "
        "unbiased estimators dashed.",
    )
    cells = ds.isel(batch_size=0)
    table = (
        cells[
            [
                "label",
                "status",
                "evaluations",
                "variance",
                "variance_se",
                "bias2",
                "bias2_se",
                "work_normalized_variance",
                "work_normalized_variance_se",
            ]
        ]
        .to_dataframe()
        .reset_index()
    )
    unbiased = cells["unbiased"].to_series()
    table = table[table["estimator"].map(unbiased).astype(bool) | (table["tau"] == table["tau"])]
    done = table[table["status"] == "done"].drop_duplicates(subset=["estimator", "k", "variance"])
    shown = done.assign(
        variance=_plus_minus(done["variance"], done["variance_se"]),
        bias2=_plus_minus(done["bias2"], done["bias2_se"]),
        at_equal_cost=_plus_minus(
            done["work_normalized_variance"], done["work_normalized_variance_se"]
        ),
    )[["label", "tau", "k", "evaluations", "variance", "bias2", "at_equal_cost"]]
    report.table(
        blocks,
        f"{name}-cells",
        "Every cell that ran (variance, bias² ± SE; at equal cost: variance × evaluations per "
        "draw, what a budget of evaluations buys)",
        done,
        shown,
    )
    skipped = table[table["status"] != "done"][["label", "status"]].drop_duplicates()
    if len(skipped):
        report.table(blocks, f"{name}-not-applicable", "Estimators that do not apply here", skipped)
    try:
        option_grid(cells, "decoupled_straight_through", "forward_tau")
    except ValueError:
        return
    report.figure(
        blocks,
        f"{name}-decoupled-grid",
        lambda: plot_option_grid(cells, "decoupled_straight_through", "forward_tau", "mse"),
        "Decoupled ST: MSE over the forward temperature τ_f (rows) and the backward one τ_b "
        "(columns); τ_f = 1 is ST-GS.",
    )


def _listops(report: _Report, ds: xr.Dataset) -> None:
    blocks = report.section("ListOps latent parse trees (paper §5.2)")
    report.figure(
        blocks,
        "listops-accuracy",
        lambda: plot_listops_accuracy(ds),
        "ListOps test accuracy (model selected on validation accuracy) against τ; "
        "bars: ±1 SE over seeds.",
    )
    report.figure(
        blocks,
        "listops-training-variance",
        lambda: plot_training_variance(ds, "tau", "ListOps"),
        "Gradient variance (trace, on a validation batch of L expressions) measured "
        "during training, mean over seeds.",
    )
    table = _seed_table(ds["test_accuracy"], ["run", "tau", "max_length"])
    shown = table.assign(value=_plus_minus(table["mean"], table["se"])).pivot(
        index=["max_length", "run"], columns="tau", values="value"
    )
    report.table(
        blocks, "listops-accuracy", "Test accuracy, mean ± SE over seeds (columns τ)", table, shown
    )
    variance = ds[["variance", "variance_se"]].to_dataframe().reset_index()
    report.table(
        blocks,
        "listops-checkpoint-variance",
        "Gradient variance of ST-GS and GR-MCK over K at a briefly trained checkpoint",
        variance,
    )


def _vae(report: _Report, ds: xr.Dataset) -> None:
    blocks = report.section("Discrete VAE (paper §5.3)")
    report.figure(
        blocks,
        "vae-bound",
        lambda: plot_vae_bound(ds),
        f"Test bound on −log p(x) (nats; lower is better) against arity, per batch "
        f"size; bars ±1 SE over seeds. Data: {ds.attrs.get('data', '?')}.",
    )
    report.figure(
        blocks,
        "vae-training-variance",
        lambda: plot_training_variance(ds, "batch_size", "Discrete VAE"),
        "Encoder-gradient variance (trace) measured during training, mean over arities and seeds.",
    )
    table = _seed_table(ds["test_iw_nll"], ["run", "arity", "batch_size"])
    shown = table.assign(value=_plus_minus(table["mean"], table["se"])).pivot(
        index="run", columns=["batch_size", "arity"], values="value"
    )
    report.table(
        blocks,
        "vae-bound",
        "Test −log p(x) bound (nats), mean ± SE over seeds (columns: batch size, arity)",
        table,
        shown,
    )
    tuned = ds[["tuned_lr", "tuned_tau", "search_negative_elbo"]].to_dataframe().reset_index()
    report.table(blocks, "vae-tuning", "Learning rate and τ chosen by random search", tuned)
    variance = ds[["variance", "variance_se"]].to_dataframe().reset_index()
    report.table(
        blocks,
        "vae-checkpoint-variance",
        "Encoder-gradient variance of ST-GS and GR-MCK over K and B at a briefly "
        "trained checkpoint",
        variance,
    )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest ``reproduction.json`` at ``path``, checked before anything is drawn: a
    ``ValueError`` naming the file and what is wrong where it is not one."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is damaged (not JSON: {error}); rerun `gvbench reproduce` to rewrite it"
        ) from None
    problems = []
    if not isinstance(manifest, dict):
        problems.append(f"a JSON {type(manifest).__name__}, not an object")
    else:
        if not isinstance(manifest.get("preset"), str):
            problems.append("'preset' is missing or not a string")
        for key in ("files", "provenance"):
            value = manifest.get(key)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                problems.append(f"{key!r} is missing or not a mapping of strings")
    if problems:
        raise ValueError(
            f"{path} is not a reproduction manifest ({'; '.join(problems)}); rerun "
            "`gvbench reproduce` to rewrite it"
        )
    return manifest


def build_report(folder: str | os.PathLike[str] = "results/report") -> Path:
    """Decide the paper's claims from the results in ``folder`` and write ``index.html``,
    ``figures/*.{png,pdf}``, ``tables/*.csv`` and ``claims.json`` there; returns the page."""
    from gvbench.harness.store import read

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: run `gvbench reproduce --out {folder}` first"
        )
    manifest = read_manifest(manifest_path)
    missing = [path for path in manifest["files"].values() if not (folder / path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{manifest_path} names results that are not in {folder}: {', '.join(missing)}; "
            f"rerun `gvbench reproduce --out {folder}` to compute them"
        )
    data = {name: read(folder / path) for name, path in manifest["files"].items()}
    for name, ds in data.items():
        grid = "point" in ds.dims  # a sweep over a grid of tasks: the simplex's kind
        if grid != (name == "simplex"):
            raise ValueError(
                f"{manifest_path}: files.{name} names {manifest['files'][name]}, a sweep of "
                + ("a grid of tasks (a simplex sweep)" if grid else "one task")
                + f"; the {name} entry needs "
                + ("a simplex sweep" if name == "simplex" else "a sweep of one task")
            )
    report = _Report(folder)
    claims: list[Claim] = []
    if "toy" in data:
        claims += toy_claims(data["toy"])
        _toy(report, data["toy"], data.get("simplex"))
    for name in FIELD_TITLES:
        if name in data:
            claims += field_claims(data[name], name)
            _field(report, name, data[name])
    if "listops" in data:
        claims += listops_claims(data["listops"])
        _listops(report, data["listops"])
    if "vae" in data:
        claims += vae_claims(data["vae"])
        _vae(report, data["vae"])
    claims_table = pd.DataFrame([vars(c) for c in claims])
    write_bytes(claims_table.to_csv(index=False).encode(), folder / "tables" / "claims.csv")
    write_bytes(json.dumps([vars(c) for c in claims], indent=1).encode(), folder / "claims.json")
    held = sum(c.verdict == HOLDS for c in claims)
    counts = claims_table["verdict"].value_counts().to_dict() if claims else {}
    summary = (
        f"Preset '{manifest['preset']}': {held} of {len(claims)} claims hold at this scale "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())}). Each verdict is decided at "
        "three standard errors; 'not resolved' means this run is too small to tell."
    )
    page = render(
        "gvbench: Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient Estimator, "
        "reproduced",
        summary,
        claims,
        {**manifest["provenance"], "report built by commit": provenance.git_commit()},
        report.sections,
    )
    return write_page(folder, page)

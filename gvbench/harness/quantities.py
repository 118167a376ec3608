"""Every quantity a sweep cell stores, declared once.

:data:`QUANTITIES` holds each one's name, long name, units, whether it has a standard error,
whether a task's parameter groups get it too, and how figures title it. The metrics the
reducer returns (:mod:`gvbench.harness.metrics`), the variables of a results file
(:mod:`gvbench.harness.store`), the CLI's ``--metrics`` choices and the figures' titles
(:mod:`gvbench.plots`) are all read from it, as are the metrics at equal cost, which are
declared by the costs (:data:`COSTS`) and the metrics that are scaled by them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Metric:
    """One quantity a cell measures.

    Attributes:
        name: the variable's name in a record and a results file.
        long_name: the netCDF ``long_name`` (its standard error's adds " (standard error)").
        title: how a figure or a sentence names it ("bias²"); the name where empty.
        power: the power of the gradient's unit in it (2 for a variance, 0 for a cosine).
        base_units: its units where the gradient is dimensionless ("s" for a time).
        se: whether it has a standard error, stored as ``<name>_se``.
        per_group: whether each parameter group of a task gets it too (``group_<name>``).
        of_draws: computed from the gradient draws by :class:`~gvbench.harness.metrics.GradientMoments`.
        error: a term of an estimator's error (variance, bias², MSE): defined in every cell,
            so a done cell has it and its SE finite, and drawn when no metric is named.
        signed: an unbiased estimate of a quantity >= 0, so of either sign near zero.
        measures_bias: 0 by construction for an unbiased estimator (its estimate is noise).
        at_equal_cost: also stored times each of :data:`COSTS` (``<cost>_normalized_<name>``).
    """

    name: str
    long_name: str
    title: str = ""
    power: int = 0
    base_units: str = "1"
    se: bool = False
    per_group: bool = False
    of_draws: bool = False
    error: bool = False
    signed: bool = False
    measures_bias: bool = False
    at_equal_cost: bool = False

    @property
    def se_name(self) -> str | None:
        """The name of its standard error's variable, or None where it has none."""
        return f"{self.name}_se" if self.se else None

    @property
    def variables(self) -> tuple[str, ...]:
        """Its variable and its standard error's, if any."""
        return (self.name, self.se_name) if self.se_name else (self.name,)

    def units(self, gradient: str = "1") -> str:
        """Its units where the gradient is in units ``gradient`` (UDUNITS syntax):
        ``gradient`` to the power :attr:`power`, times :attr:`base_units`."""
        factors = []
        if gradient != "1" and self.power:
            base = gradient if gradient.isidentifier() else f"({gradient})"
            factors.append(base if self.power == 1 else f"{base}^{self.power}")
        if self.base_units != "1":
            factors.append(self.base_units)
        return " ".join(factors) or "1"


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a gradient draw costs: a budget spent in these units buys budget / cost draws.

    Attributes:
        name: the budget it fixes ("work": equal-work comparisons).
        variable: the cell's quantity that measures it per draw.
        per_draw: how a sentence names it.
        option: how a command names it (``gvbench compare --cost``).
        units: its units.
    """

    name: str
    variable: str
    per_draw: str
    option: str
    units: str = "1"


COSTS = (
    Cost("work", "evaluations", "objective evaluations per draw", "evaluations"),
    Cost("time", "draw_seconds", "seconds per draw", "seconds", "s"),
)


def _metrics() -> tuple[Metric, ...]:
    """The metrics of the draws, each with its standard error."""
    draws = dict(se=True, per_group=True, of_draws=True)
    return (
        Metric(
            "variance",
            "trace of the covariance of the gradient estimate",
            "variance (trace)",
            power=2,
            error=True,
            at_equal_cost=True,
            **draws,
        ),
        Metric(
            "variance_per_coord",
            "trace of the covariance per gradient coordinate (V/P)",
            "variance per coordinate",
            power=2,
            **draws,
        ),
        Metric(
            "bias2",
            "squared bias ‖E ĝ − g*‖², finite-sample corrected",
            "bias²",
            power=2,
            error=True,
            signed=True,
            measures_bias=True,
            **draws,
        ),
        Metric(
            "mse",
            "mean squared error E‖ĝ − g*‖²",
            "MSE",
            power=2,
            error=True,
            at_equal_cost=True,
            **draws,
        ),
        Metric("cosine", "cosine between the mean estimate and the reference gradient", **draws),
        Metric("snr", "signal-to-noise ratio ‖E ĝ‖ / sqrt(V/P)", "SNR", **draws),
    )


def _cell_quantities() -> tuple[Metric, ...]:
    """A cell's other quantities: its cost, its reference and its estimator's adapted state."""
    group = dict(per_group=True)
    return (
        Metric("mean_norm", "norm of the mean gradient estimate", power=1, of_draws=True, **group),
        Metric(
            "seconds",
            "wall time of the cell (both passes over the draws, and the metrics)",
            base_units="s",
        ),
        Metric(
            "draw_seconds",
            "wall time per gradient draw (first pass), the cost of one estimate",
            base_units="s",
        ),
        Metric("evaluations", "objective evaluations per gradient draw"),
        Metric("parameters", "number of measured gradient coordinates P", **group),
        Metric("reference_norm2", "squared norm of the reference gradient ‖g*‖²", power=2, **group),
        Metric("reference_draws", "draws of the RLOO reference (0: exact by enumeration)"),
        Metric(
            "reference_variance",
            "the reference's own noise V_ref/N_ref, subtracted from bias² (0: exact)",
            power=2,
            of_draws=True,
            **group,
        ),
        Metric(
            "warmup",
            "steps the estimator adapted its state for (16 draws each) before it was frozen",
        ),
        Metric("adapted_baseline", "REINFORCE's running-mean baseline after adaptation"),
        Metric("adapted_eta", "the control variate's scale η after adaptation (REBAR, RELAX)"),
        Metric(
            "adapted_temperature",
            "the control variate's temperature λ after adaptation (REBAR, RELAX)",
        ),
    )


def _scaled_name(metric: Metric, cost: Cost) -> str:
    return f"{cost.name}_normalized_{metric.name}"


def _at_equal_cost(metric: Metric, cost: Cost) -> Metric:
    """``metric`` times ``cost``: a draw of cost c averages budget / c draws, so V·c ranks
    estimators at any budget."""
    return Metric(
        _scaled_name(metric, cost),
        f"{metric.title or metric.name} × {cost.per_draw} (equal-{cost.name} cost)",
        power=metric.power,
        base_units=cost.units,
        se=metric.se,
    )


def _quantities() -> dict[str, Metric]:
    declared = (*_metrics(), *_cell_quantities())
    scaled = [_at_equal_cost(m, cost) for cost in COSTS for m in declared if m.at_equal_cost]
    return {metric.name: metric for metric in (*declared, *scaled)}


QUANTITIES: Mapping[str, Metric] = _quantities()

# The metrics of the draws with standard errors: what figures draw, one per figure.
METRICS = tuple(m.name for m in QUANTITIES.values() if m.of_draws and m.se)
# The terms of the error, drawn when no metric is named.
ERRORS = tuple(m.name for m in QUANTITIES.values() if m.error)
# A "done" cell must have these finite (cosine and SNR are undefined at a zero mean gradient).
REQUIRED_FINITE = tuple(v for m in QUANTITIES.values() if m.error for v in m.variables)
# The power of the gradient's unit in each of the reducer's results that has one.
UNITS_POWER = {
    variable: m.power
    for m in QUANTITIES.values()
    if m.of_draws and m.power
    for variable in m.variables
}


def _variables(per_group: bool) -> tuple[str, ...]:
    """The metrics of the draws, then their SEs, then every other quantity (and its SE)."""
    chosen = [m for m in QUANTITIES.values() if m.per_group or not per_group]
    metrics = [m for m in chosen if m.name in METRICS]
    return (
        *(m.name for m in metrics),
        *(m.se_name for m in metrics),
        *(v for m in chosen if m.name not in METRICS for v in m.variables),
    )


# The per-cell numeric variables of a sweep Dataset.
CELL_VARIABLES = _variables(per_group=False)
# Per parameter group (a ``group`` dimension, as ``group_<name>``), when a task has groups.
GROUP_VARIABLES = _variables(per_group=True)


def quantity(variable: str) -> Metric:
    """The quantity of ``variable``, itself or the standard error ``<name>_se``.

    Raises:
        KeyError: a variable no cell stores.
    """
    if variable in QUANTITIES:
        return QUANTITIES[variable]
    return QUANTITIES[variable.removesuffix("_se")]


def long_name(variable: str) -> str:
    """The netCDF ``long_name`` of ``variable`` (a quantity or its standard error)."""
    base = quantity(variable).long_name
    return base + " (standard error)" if variable not in QUANTITIES else base


def title(variable: str) -> str:
    """How a figure names ``variable``: its quantity's title, or the name itself."""
    known = QUANTITIES.get(variable)
    return (known.title or known.name) if known else variable


def at_equal_cost(metrics: Mapping[str, float], costs: Mapping[str, float]) -> dict[str, float]:
    """Each metric scaled by each cost, with its SE: ``<cost>_normalized_<metric>``.

    An estimator whose draw costs c averages B/c draws within a budget B, so V·c ranks
    estimators at any budget (and V·c/B is what the budget buys). The SEs scale alike: the
    costs are counts and measured times, taken as known.

    Args:
        metrics: a cell's metrics with their SEs.
        costs: its cost variables (:attr:`Cost.variable`: evaluations, draw_seconds).
    """
    scaled = {}
    for metric in QUANTITIES.values():
        if metric.at_equal_cost:
            for cost in COSTS:
                name = _scaled_name(metric, cost)
                scaled[name] = metrics[metric.name] * costs[cost.variable]
                scaled[f"{name}_se"] = metrics[metric.se_name] * costs[cost.variable]
    return scaled

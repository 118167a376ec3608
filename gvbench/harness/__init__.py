"""The variance harness: gradient draws, references, metrics, sweeps and their storage."""

from gvbench.harness.draws import gradient_chunks, gradient_draws
from gvbench.harness.metrics import METRICS, GradientMoments, Reference, gradient_metrics
from gvbench.harness.reference import reference_gradient
from gvbench.harness.store import read, write_atomic
from gvbench.harness.sweep import DEFAULT_K, DEFAULT_REPS, DEFAULT_TAU, Cell, process_pool, sweep
from gvbench.harness.views import select_group, table, variance_shares

__all__ = [
    "DEFAULT_K",
    "DEFAULT_REPS",
    "DEFAULT_TAU",
    "METRICS",
    "Cell",
    "GradientMoments",
    "Reference",
    "gradient_chunks",
    "gradient_draws",
    "gradient_metrics",
    "process_pool",
    "read",
    "reference_gradient",
    "select_group",
    "sweep",
    "table",
    "variance_shares",
    "write_atomic",
]

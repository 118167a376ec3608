"""Two estimators of one sweep compared cell by cell."""

from __future__ import annotations

import numpy as np
import xarray as xr


def variance_ratio(
    ds: xr.Dataset, numerator: str = "st_gumbel_softmax", denominator: str = "gumbel_rao"
) -> xr.Dataset:
    """Var(numerator) / Var(denominator) in every cell, with the SE of its logarithm.

    The two variances are estimated from independent draws, so by the delta method
    SE(log r)² = (se₁/V₁)² + (se₂/V₂)²; a band exp(log r ± z·SE) stays positive.

    Returns:
        Dataset with ``ratio`` and ``log_se`` over the sweep's remaining dimensions.
    """
    top, bottom = ds.sel(estimator=numerator), ds.sel(estimator=denominator)
    ratio = top["variance"] / bottom["variance"]
    log_se = np.hypot(
        top["variance_se"] / top["variance"], bottom["variance_se"] / bottom["variance"]
    )
    return xr.Dataset({"ratio": ratio, "log_se": log_se}).drop_vars("estimator", errors="ignore")

"""The paper's Figure 1: Gumbel-Rao's variance reduction over the probability simplex."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr


def plot_simplex(ds: xr.Dataset, k: int | None = None) -> plt.Figure:
    """The paper's Figure 1: log₁₀ tr Cov(ST-GS) − log₁₀ tr Cov(GR-MCK) over the simplex, per τ.

    ``ds`` comes from a sweep over simplex points (coords ``p1, p2, p3`` along ``point``);
    ``k`` defaults to the largest K in the file.
    """
    k = int(ds["k"].max()) if k is None else k
    ds = ds.sel(batch_size=ds["batch_size"].values[0], k=k)
    difference = np.log10(ds["variance"].sel(estimator="st_gumbel_softmax")) - np.log10(
        ds["variance"].sel(estimator="gumbel_rao")
    )
    # Barycentric (p1, p2, p3) → the plane of an equilateral triangle.
    x = ds["p2"].values + 0.5 * ds["p3"].values
    y = np.sqrt(3) / 2 * ds["p3"].values
    taus = ds["tau"].values
    figure, axes = plt.subplots(1, len(taus), figsize=(3.6 * len(taus), 3.4), squeeze=False)
    limit = float(np.nanmax(np.abs(difference.values)))
    for ax, tau in zip(axes[0], taus, strict=True):
        values = difference.sel(tau=tau).values
        if len(x) >= 3:
            image = ax.tripcolor(
                x, y, values, shading="gouraud", cmap="viridis", vmin=0, vmax=limit
            )
        else:  # a coarse grid (--resolution 3 has one interior point) has no triangle to fill
            image = ax.scatter(x, y, c=values, s=160, cmap="viridis", vmin=0, vmax=limit)
        ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="black", lw=0.8)
        # The corners are the one-hot points: p = (1, 0, 0), (0, 1, 0), (0, 0, 1).
        for (cx, cy), text, align in (
            ((0.0, 0.0), "p₁ = 1", "right"),
            ((1.0, 0.0), "p₂ = 1", "left"),
            ((0.5, np.sqrt(3) / 2), "p₃ = 1", "center"),
        ):
            ax.annotate(
                text,
                (cx, cy),
                xytext=(0, 6 if cy else -10),
                textcoords="offset points",
                ha=align,
                fontsize=8,
            )
        ax.set_title(f"τ = {tau:g}")
        ax.set_aspect("equal")
        ax.set_xlim(-0.15, 1.15)
        ax.set_ylim(-0.12, 1.0)
        ax.axis("off")
    figure.colorbar(
        image, ax=axes[0].tolist(), shrink=0.8, label=f"log₁₀ (Var ST-GS / Var GR-MC{k})"
    )
    reps = ds.attrs.get("reps", "?")
    figure.suptitle(
        "Variance reduction of Gumbel-Rao over the probability simplex\n"
        f"(3 categories, {ds.sizes['point']} points, N = {reps} draws each; > 0: GR-MCK lower)"
    )
    return figure

"""What a study's report section is made of: figures (PNG and PDF), tables (CSV and HTML),
and the two formats every section shows a mean in (± SE, over seeds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gvbench.atomic_files import write_bytes
from gvbench.plots import save_figure
from gvbench.report.figures import over_seeds
from gvbench.report.page import figure_block, table_block


def plus_minus(mean: pd.Series, se: pd.Series) -> pd.Series:
    """``mean ± se`` as text, ``—`` where the mean is not finite."""
    return pd.Series(
        [f"{m:.4g} ± {s:.2g}" if np.isfinite(m) else "—" for m, s in zip(mean, se, strict=True)],
        index=mean.index,
    )


def seed_table(values: xr.DataArray, dims: list[str]) -> pd.DataFrame:
    """Mean, SE (sample sd / √n) and n over seeds, one row per cell of ``dims``."""
    mean, se, n = over_seeds(values)
    table = xr.Dataset({"mean": mean, "se": se, "seeds": n}).to_dataframe()
    return table.reset_index()[[*dims, "mean", "se", "seeds"]]


class Report:
    """A report being built in ``folder``: sections of figures and tables, in order.

    A study adds its part in :meth:`gvbench.study.Study.report`::

        blocks = report.section("My study")
        report.figure(blocks, "my-figure", lambda: plot(ds), "What it shows.")
        report.table(blocks, "my-table", "What it lists", table)
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "tables").mkdir(parents=True, exist_ok=True)
        self.sections: list[tuple[str, list[str]]] = []

    def section(self, name: str) -> list[str]:
        """A new section headed ``name``; its blocks, for :meth:`figure` and :meth:`table`."""
        self.sections.append((name, []))
        return self.sections[-1][1]

    def figure(self, blocks: list[str], name: str, draw: Callable[[], Any], caption: str) -> None:
        """``draw()``'s figure saved as ``figures/NAME.{png,pdf}`` and shown with ``caption``."""
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
        """``data`` saved as ``tables/NAME.csv`` and shown (as ``shown`` where given)."""
        path = self.folder / "tables" / f"{name}.csv"
        write_bytes(data.to_csv(index=False).encode(), path)
        blocks.append(table_block(title, data if shown is None else shown, f"tables/{path.name}"))

"""The leaderboard as one HTML page, built from the report's blocks: the claims, a table per
measure (value ± SE, ★ resolved best, ≈ tied group, or why a cell has no value), and each
column's protocol and figures. Figures are embedded, tables inline, no scripts."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from gvbench.leaderboard.column import Column
from gvbench.leaderboard.measures import MEASURES
from gvbench.leaderboard.ranking import RULE
from gvbench.report.claims import FAILS, HOLDS, Claim
from gvbench.report.page import STYLESHEET, figure_block, table_block, write_page


class PageFigure(NamedTuple):
    """A figure as the page shows it: its PNG (embedded), its PDF (linked, relative to the
    page) and its caption."""

    png: Path
    pdf: Path
    caption: str


def render(
    preset: str,
    columns: Sequence[Column],
    tables: Mapping[str, pd.DataFrame],
    claims: Sequence[Claim],
    figures: Mapping[str, Sequence[PageFigure]],
    facts: Mapping[str, str],
) -> str:
    """The page.

    Args:
        tables: measure → its table as shown (:func:`gvbench.leaderboard.tables.shown`).
        figures: column name → its figures.
        facts: provenance and the studies without a column, as rows of a table.
    """
    title = f"gvbench leaderboard, preset {preset}"
    summary = (
        f"{len(columns)} column(s); each estimator at matched budgets: gradient quality at a "
        "fixed checkpoint (per draw, per evaluation, per second) and the training outcome "
        "after a random search of the same size for every estimator."
    )
    rows = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in facts.items()
    )
    protocols = "".join(
        f"<li><b>{html.escape(c.title)}</b> (<code>{html.escape(c.name)}</code>): "
        f"{html.escape(c.protocol)}</li>"
        for c in columns
    )
    blocks = [
        f'<h1>{html.escape(title)}</h1><p class="summary">{html.escape(summary)}</p>',
        f"<p>{html.escape(RULE)}</p>",
        f'<h2 id="columns">Columns</h2><ul>{protocols}</ul>',
        f'<h2 id="claims-section">The field\'s claims</h2>{claims_table(claims)}',
        '<h2 id="tables">Tables</h2>',
    ]
    for measure, shown in tables.items():
        blocks.append(table_block(MEASURES[measure].title, _by_estimator(shown), f"{measure}.csv"))
    blocks.append('<h2 id="figures">Figures</h2>')
    for column in columns:
        drawn = figures.get(column.name, ())
        if drawn:
            blocks.append(f"<h3>{html.escape(column.title)}</h3>")
            blocks += [figure_block(f.png, f.caption, f.pdf) for f in drawn]
    blocks.append(f'<h2 id="provenance">Provenance</h2><table>{rows}</table>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)}</title><link rel="stylesheet" href="{STYLESHEET}">'
        f"</head><body>{''.join(blocks)}</body></html>"
    )


def _by_estimator(shown: pd.DataFrame) -> pd.DataFrame:
    """Rows named by estimator, "estimator" heading the row names (one header row)."""
    return shown.set_index("estimator").rename_axis(index=None, columns="estimator")


def claims_table(claims: Sequence[Claim]) -> str:
    """The claims, one row each, coloured by verdict with the report's stylesheet."""
    style = {HOLDS: "holds", FAILS: "fails"}
    rows = "".join(
        f'<tr class="{style.get(c.verdict, "open")}">'
        + "".join(
            f'<td class="{kind}">{html.escape(text)}</td>'
            for kind, text in (
                ("text", c.experiment),
                ("text", c.statement),
                ("verdict", c.verdict),
                ("text", c.evidence),
                ("text", c.rule),
            )
        )
        + "</tr>"
        for c in claims
    )
    return (
        '<table id="claims"><tr><th>column</th><th>the field says</th><th>this run</th>'
        f"<th>numbers (± SE)</th><th>decided by</th></tr>{rows}</table>"
    )


def write(folder: Path, page: str) -> Path:
    """``folder/index.html`` with the report's stylesheet beside it."""
    return write_page(folder, page)

"""The report as one HTML page: figures embedded, tables inline, no scripts, and its stylesheet.

The stylesheet is a file of its own beside the page, the same bytes in every report folder, so
the reports kept in git share one copy of it instead of holding one inside each page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from gvbench.atomic_files import write_bytes
from gvbench.report.claims import FAILS, HOLDS, Claim

PAGE = "index.html"
STYLESHEET = "report.css"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text { text-align: left; }
.verdict { font-weight: 600; white-space: nowrap; }
.holds { background: #e3f1e6; } .fails { background: #f8e1dc; } .open { background: #f2f2f2; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
.summary { font-size: 1.1em; }
"""


def _verdict_class(verdict: str) -> str:
    return {HOLDS: "holds", FAILS: "fails"}.get(verdict, "open")


def claims_table(claims: Sequence[Claim]) -> str:
    rows = "".join(
        f'<tr class="{_verdict_class(c.verdict)}"><td class="text">{html.escape(c.experiment)}</td>'
        f'<td class="text">{html.escape(c.statement)}</td>'
        f'<td class="verdict">{html.escape(c.verdict)}</td>'
        f'<td class="text">{html.escape(c.evidence)}</td>'
        f'<td class="text">{html.escape(c.rule)}</td></tr>'
        for c in claims
    )
    return (
        '<table id="claims"><tr><th>experiment</th><th>the paper says</th><th>this run</th>'
        f"<th>numbers (± SE)</th><th>decided by</th></tr>{rows}</table>"
    )


def figure_block(png: Path, caption: str, pdf: Path | None = None) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    link = f' (<a href="{html.escape(pdf.as_posix())}">PDF</a>)' if pdf else ""
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
    )


def table_block(title: str, table: pd.DataFrame, csv: str) -> str:
    body = table.to_html(float_format=lambda v: f"{v:.4g}", na_rep="—", border=0)
    return f"<h3>{html.escape(title)}</h3><p>CSV: <code>{html.escape(csv)}</code></p>{body}"


def render(
    title: str,
    summary: str,
    claims: Sequence[Claim],
    provenance: Mapping[str, str],
    sections: Sequence[tuple[str, Sequence[str]]],
) -> str:
    """The page: title, one-line summary, claims, provenance, then a section per experiment."""
    facts = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in provenance.items()
    )
    body = "".join(
        f'<h2 id="{html.escape(name.lower().split()[0])}">{html.escape(name)}</h2>'
        + "".join(blocks)
        for name, blocks in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)}</title><link rel="stylesheet" href="{STYLESHEET}">'
        "</head><body>"
        f'<h1>{html.escape(title)}</h1><p class="summary">{html.escape(summary)}</p>'
        f'<h2 id="claims-section">The paper\'s claims</h2>{claims_table(claims)}'
        f'<h2 id="provenance">Provenance</h2><table>{facts}</table>{body}</body></html>'
    )


def write_page(folder: Path, page: str) -> Path:
    """Write ``page`` as ``folder/index.html`` with its stylesheet beside it; returns the page."""
    write_bytes(STYLE.lstrip().encode("utf-8"), folder / STYLESHEET)
    index = folder / PAGE
    write_bytes(page.encode("utf-8"), index)
    return index

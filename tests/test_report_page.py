"""The report's page links one stylesheet, written beside it with the same bytes in every
report folder, so the reports kept in git share one copy of it."""

from __future__ import annotations

from pathlib import Path

from gvbench.report.claims import HOLDS, Claim
from gvbench.report.page import STYLESHEET, render, write_page

KEPT = Path(__file__).resolve().parent.parent / "results"


def test_the_page_links_its_stylesheet_and_writes_it_beside_itself(tmp_path):
    claim = Claim("toy", "a statement", HOLDS, "1.0 ± 0.1", "z ≥ 3")
    page = render("A title", "A summary.", [claim], {"git commit": "abc"}, [("Toy", ["<p>"])])
    assert f'<link rel="stylesheet" href="{STYLESHEET}">' in page and "<style" not in page
    index = write_page(tmp_path, page)
    assert index == tmp_path / "index.html" and index.read_text() == page
    css = (tmp_path / STYLESHEET).read_text()
    assert "table {" in css and ".holds" in css  # the rules the page's classes use


def test_every_kept_report_links_the_same_stylesheet(tmp_path):
    write_page(tmp_path, "")
    written = (tmp_path / STYLESHEET).read_bytes()
    kept = sorted(KEPT.glob("report*/index.html"))
    assert len(kept) == 2  # results/report and results/report-medium
    for index in kept:
        assert f'href="{STYLESHEET}"' in index.read_text() and "<style" not in index.read_text()
        assert (index.parent / STYLESHEET).read_bytes() == written, index.parent

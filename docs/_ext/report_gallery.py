"""The ``report-figures`` directive: the figures of a kept report, shown in the docs.

A report's ``index.html`` embeds every figure as a PNG with its caption and a link to its PDF;
git keeps the page and the PDFs, not the PNG files. The directive reads the figures out of the
page, so the gallery shows exactly what the report shows, with no second copy of any image in
the repository::

    ```{report-figures} ../results/report/index.html
    ```
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

FIGURE = re.compile(
    r'<figure><img alt="[^"]*" src="(?P<uri>data:image/png;base64,[^"]+)">'
    r"<figcaption>(?P<caption>.*?)(?: \(<a href=\"(?P<pdf>[^\"]+)\">PDF</a>\))?</figcaption>"
    r"</figure>"
)


class ReportFigures(SphinxDirective):
    """One figure node per figure of the report page named by the argument."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        relative, page = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(relative)
        found = list(FIGURE.finditer(Path(page).read_text(encoding="utf-8")))
        if not found:
            raise self.error(f"{self.arguments[0]} embeds no figure")
        folder = Path(self.arguments[0]).parent
        return [self._figure(match, folder) for match in found]

    def _figure(self, match: re.Match[str], folder: Path) -> nodes.figure:
        caption_text = html.unescape(match["caption"])
        figure = nodes.figure()
        figure += nodes.image(uri=match["uri"], alt=caption_text)
        caption = nodes.caption(caption_text, caption_text)
        if match["pdf"]:
            pdf = (folder / html.unescape(match["pdf"])).as_posix()
            link = addnodes.download_reference(pdf, "", reftarget=pdf, refdoc=self.env.docname)
            link += nodes.literal("PDF", "PDF")
            caption += [nodes.Text(" ("), link, nodes.Text(")")]
        figure += caption
        return figure


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("report-figures", ReportFigures)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

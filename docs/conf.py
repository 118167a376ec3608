"""Sphinx configuration of gvbench's documentation: MyST Markdown pages, the PyData theme, and an
API reference read from the docstrings. ``make docs`` builds it; ``tests/test_docs.py`` builds it
with warnings as errors."""

from __future__ import annotations

import sys
from pathlib import Path

import gvbench

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))  # the report gallery's directive

project = "gvbench"
author = "gvbench's authors"
copyright = "gvbench's authors"
release = version = gvbench.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "report_gallery",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]

# MyST: $…$ and $$…$$ for the math, ::: fences for directives, definition lists for options.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True
# A class's "Class attributes:" section reads like Google style's "Attributes:".
napoleon_custom_sections = [("Class attributes", "params_style")]

html_theme = "pydata_sphinx_theme"
html_title = "gvbench"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False

"""Sphinx configuration of the skcgcnn documentation (``make docs`` builds it)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))      # the tree being documented wins over an install
sys.path.insert(0, str(DOCS / "_ext"))

import skcgcnn  # noqa: E402
from inventories import SITES  # noqa: E402

project = "skcgcnn"
author = "skcgcnn developers"
copyright = "skcgcnn developers, MIT license"
version = release = skcgcnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_intersphinx", "_ext", "tutorial", "**.ipynb_checkpoints",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.json", "auto_examples/*.md5",
                    "auto_tutorial/*.ipynb", "auto_tutorial/*.py", "auto_tutorial/*.zip",
                    "auto_tutorial/*.json", "auto_tutorial/*.md5"]
templates_path = ["_templates"]

# -- API reference ---------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"            # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False   # one page per class, no member tables of stubs
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- the user guide (the Markdown files under docs/) -----------------------------------
myst_heading_anchors = 3              # [text](graphs.md#inputs-and-ids) as on GitHub
myst_enable_extensions = ["dollarmath"]

# -- the gallery and the tutorial: executed at every build -----------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["../examples", "tutorial"],
    "gallery_dirs": ["auto_examples", "auto_tutorial"],
    "filename_pattern": r"\.py$",      # run every example, not only plot_*.py
    "ignore_pattern": r"(__init__|_helpers)\.py$",
    "image_scrapers": ("matplotlib", "gallery_scraper.png_scraper"),
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
    "abort_on_example_error": True,
}

# -- links to the projects skcgcnn builds on -------------------------------------------
# Each inventory is read from docs/_intersphinx/<name>.inv when that file exists (CI has
# no network; `make docs-inventories` stores them), else from the project's site when it
# can be reached. Without either, that project's links are left out (plain text, no
# warning): the build stays warning-free offline.


def _reachable(url: str, timeout: float = 3.0) -> bool:
    if os.environ.get("SKCGCNN_DOCS_OFFLINE"):
        return False
    try:
        with socket.create_connection((urlparse(url).hostname, 443), timeout=timeout):
            return True
    except OSError:
        return False


intersphinx_mapping = {}
for _name, _url in SITES.items():
    _stored = DOCS / "_intersphinx" / f"{_name}.inv"
    if _stored.is_file():
        intersphinx_mapping[_name] = (_url, str(_stored))
    elif _reachable(_url):
        intersphinx_mapping[_name] = (_url, None)
intersphinx_timeout = 10

# -- HTML ------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skcgcnn {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
html_copy_source = False


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_{method}_request`` methods (metadata
    routing): their docstrings point into scikit-learn's own user guide."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)

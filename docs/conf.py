"""Sphinx configuration: MyST pages, the API reference from the Google-style docstrings, and the notebooks,
executed during the build (``sphinx-build -W -b html docs docs/_build/html``; ``tests/test_docs.py`` runs it)."""

import os
import pathlib
import shutil

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the notebooks and autodoc import JAX; no accelerator is needed

import convtranspose

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "convtranspose"
author = "The convtranspose authors"
copyright = "2026, the convtranspose authors"
release = version = convtranspose.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "sphinx-mathjax-offline",  # (its import name has hyphens) MathJax served with the site: formulas render without a network
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The notebooks live in the repository's notebooks/ (the tests and Jupyter open them there); the build copies
# them in and runs every one, so their plots are in the site. A notebook that raises fails the build.
shutil.copytree(ROOT / "notebooks", DOCS / "notebooks", dirs_exist_ok=True)
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_merge_streams = True
# jaxlib's CUDA plugin (in the test extra) logs from C++ that it found no driver; not part of any page
nb_output_stderr = "remove"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
default_role = "py:obj"  # `name` in a docstring links where Sphinx knows the name

html_theme = "furo"
html_title = "convtranspose"
html_static_path = []
napoleon_use_ivar = True  # "Attributes:" as a field list: the dataclass fields are not documented twice

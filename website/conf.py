"""Sphinx configuration of the course website. `python website/build.py` (or `make site`) stages the
README, docs/ and the executed notebooks and runs Sphinx with this file; see website/build.py."""

project = "dlmie: Deep Learning Made It Easy"
author = "the dlmie authors"
copyright = "the dlmie authors, MIT licence"
root_doc = "index"

extensions = [
    "myst_nb",  # notebooks and Markdown (MyST) pages
    "sphinx-mathjax-offline",  # MathJax 3 served with the site: the math renders without any CDN
]

# The notebooks arrive executed by `make notebooks`: render what they hold, never run them again.
nb_execution_mode = "off"
# No widget JavaScript from a CDN: notebook 08's slider cell is tagged remove-cell, and its per-word
# grids are on the page as figures.
nb_ipywidgets_js = {}
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # README.md#results and docs/measurements.md#benchmarks resolve

html_theme = "sphinx_book_theme"
html_title = "dlmie"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": True,
}
html_last_updated_fmt = None
html_show_sphinx = False

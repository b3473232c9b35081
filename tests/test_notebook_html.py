"""The HTML of executed notebooks (`make notebooks`): every figure carries the alternative text of its
cell (`mystnb.image.alt`, also what the course website shows), through the options the Makefile passes
to nbconvert (its NBCONVERT_HTML: the template dlmie/templates/dlmie-lab)."""

import html
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
# What nbconvert writes on an image that has no alternative text (and then it warns).
PLACEHOLDER = "No description has been provided for this image"
ALT = 'Two lines, y = x and y = 1 - x, crossing at (0.5, 0.5) & "labelled"'


def makefile_html_options() -> list[str]:
    match = re.search(r"^NBCONVERT_HTML := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile defines no NBCONVERT_HTML"
    return shlex.split(match.group(1))


def nbconvert(*args) -> subprocess.CompletedProcess:
    """`jupyter nbconvert ARGS` run from the repository root, as the Makefile runs it."""
    return subprocess.run([sys.executable, "-m", "nbconvert", "--log-level", "WARN", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)


def image_alts(page: str) -> list[str | None]:
    """The alt attribute of every <img> of an HTML page, in order (None where it has none)."""
    alts = []
    for tag in re.findall(r"<img\b[^>]*>", page):
        match = re.search(r"""\balt=(?:"([^"]*)"|'([^']*)')""", tag)
        alts.append(html.unescape(match.group(1) if match.group(1) is not None else match.group(2))
                    if match else None)
    return alts


def test_an_executed_notebooks_figures_carry_their_cells_alt_text(tmp_path):
    plot = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [0, 1]); plt.plot([0, 1], [1, 0])\nplt.show()"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%matplotlib inline"),
        nbformat.v4.new_code_cell(plot, metadata={"mystnb": {"image": {"alt": ALT}}}),
        nbformat.v4.new_code_cell(plot),  # no alt text: nbconvert's placeholder
    ])
    nbformat.write(nb, tmp_path / "figures.ipynb")
    nbconvert("--to", "notebook", "--execute", "--output-dir", str(tmp_path / "build"), str(tmp_path / "figures.ipynb"))
    executed = nbformat.read(tmp_path / "build" / "figures.ipynb", as_version=4)
    assert ["image/png" in out.get("data", {}) for cell in executed.cells for out in cell.outputs] == [True, True]

    result = nbconvert(*makefile_html_options(), "--output-dir", str(tmp_path / "build"),
                       str(tmp_path / "build" / "figures.ipynb"))
    page = (tmp_path / "build" / "figures.html").read_text()
    assert image_alts(page) == [ALT, PLACEHOLDER]
    assert "Alternative text is missing on 1 image(s)" in result.stderr


def test_every_figure_cell_of_the_notebooks_has_alt_text():
    """A cell that shows a figure (plt.show()) carries the alternative text the HTML and the website
    give it; cells the website leaves out (tag remove-cell: notebook 08's live slider) excepted."""
    missing = []
    for path in NOTEBOOKS:
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            metadata = cell["metadata"]
            if (cell["cell_type"] == "code" and "plt.show()" in "".join(cell["source"])
                    and "remove-cell" not in metadata.get("tags", [])):
                alt = metadata.get("mystnb", {}).get("image", {}).get("alt", "")
                if not alt.strip():
                    missing.append(f"{path.name} cell {index}")
    assert not missing, f"figure cells without mystnb.image.alt: {missing}"

"""The course website (website/build.py, `make site`): built from notebooks, then read in headless
Chromium as a person would (website/check.py).

CI does not run `make notebooks` (half an hour at full settings), so the site here is built from the
committed notebooks with notebook 00 executed in its quick setting (about 20 s): its page carries real
outputs and a figure, the other eight pages their text, math and code. The build and the checks are
the same ones `make site` and `python website/check.py` run on the fully executed notebooks.
"""

import html
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
EXECUTED = "00_engine_and_layers"


def website_module(name):
    spec = importlib.util.spec_from_file_location(f"website_{name}", ROOT / "website" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = website_module("check")
needs_chromium = pytest.mark.skipif(
    check.find_chromium() is None,
    reason="no Chromium to read the site with: install Debian's package (apt-get install chromium); .ci/run does")


def build_site(notebooks: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "website" / "build.py"), "--notebooks", str(notebooks),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import nbclient
    import nbformat

    notebooks = tmp_path_factory.mktemp("notebooks")
    for path in NOTEBOOKS:
        shutil.copyfile(path, notebooks / path.name)
    nb = nbformat.read(ROOT / "notebooks" / f"{EXECUTED}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute(env={**os.environ, "DLMIE_QUICK": "1"})
    nbformat.write(nb, notebooks / f"{EXECUTED}.ipynb")
    result = build_site(notebooks, tmp_path_factory.mktemp("site") / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1].removeprefix("site: ")).parent


def test_front_page_links_every_notebook_in_order(site):
    index = (site / "index.html").read_text()
    first_seen = list(dict.fromkeys(re.findall(r'href="notebooks/(\d\d_\w+)\.html"', index)))
    assert first_seen == [path.stem for path in NOTEBOOKS] and len(first_seen) == 10
    for path in NOTEBOOKS:  # each page is titled by its notebook's heading ("01 · Saliency: ...")
        heading = json.loads(path.read_text())["cells"][0]["source"][0].removeprefix("# ")
        title = html.unescape(re.search(r"<title>(.*?)</title>", (site / "notebooks" / f"{path.stem}.html").read_text()).group(1))
        assert title.split()[:3] == heading.split()[:3]


def test_figures_carry_the_alternative_text_of_their_cell(site):
    nb = json.loads((ROOT / "notebooks" / f"{EXECUTED}.ipynb").read_text())
    alts = [c["metadata"]["mystnb"]["image"]["alt"] for c in nb["cells"] if "mystnb" in c["metadata"]]
    page = (site / "notebooks" / f"{EXECUTED}.html").read_text()
    images = re.findall(r'<img alt="([^"]*)" src="\.\./(_images/[^"]+)"', page)
    assert alts and [html.unescape(alt) for alt, _ in images] == alts
    assert all((site / src).stat().st_size > 1000 for _, src in images)


def test_the_slider_stays_in_jupyter(site):
    """Notebook 08's slider needs a kernel: its cells are left out of the page, the grids stay."""
    page = (site / "notebooks" / "08_attention_maps.html").read_text()
    assert "IntSlider" not in page and "widget-view" not in page
    assert "Attention over real images" in page and "A measurement where the right answer is known" in page


def test_a_missing_notebook_names_the_command_that_makes_it(tmp_path):
    result = build_site(tmp_path, tmp_path / "site")
    assert result.returncode == 2 and "make notebooks" in result.stderr and "00_engine_and_layers" in result.stderr
    assert not (tmp_path / "site").exists()


@needs_chromium
def test_every_page_reads_well_in_chromium(site):
    pages, problems = check.check_site(site)
    assert problems == []
    notebooks = {path.stem: pages[f"notebooks/{path.stem}.html"] for path in NOTEBOOKS}
    assert all(page.formulas > 0 for page in notebooks.values())  # every notebook has math, all of it typeset
    assert notebooks[EXECUTED].figures >= 1 and pages["index.html"].figures == 2
    assert any(link.endswith("notebooks/01_saliency.html") for link in pages["search.html?q=saliency"].search_results)


def png(path: Path, rows: list[bytes]):
    """A grey-scale PNG of the given rows of pixel bytes."""
    raw = b"".join(b"\0" + row for row in rows)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", len(rows[0]), len(rows), 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@needs_chromium
def test_the_browser_check_sees_what_a_reader_would(tmp_path):
    """A page with a blank figure and no alt text, raw TeX, and a link to nowhere; no search page."""
    png(tmp_path / "blank.png", [bytes(8)] * 8)
    png(tmp_path / "chart.png", [bytes(range(0, 240, 30))] * 8)
    (tmp_path / "index.html").write_text(
        '<html><head><title>t</title></head><body><h1 id="top">t</h1>'
        '<img src="blank.png" alt="a chart"><img src="chart.png"><img src="chart.png" alt="chart.png">'
        '<span class="math">\\(x^2\\)</span><a href="missing.html">gone</a><a href="index.html#nowhere">x</a>'
        '<a href="index.html#top">ok</a></body></html>')
    _, problems = check.check_site(tmp_path)
    expected = ["image blank.png is blank", "image chart.png has no alternative text (alt=None)",
                "image chart.png has no alternative text (alt='chart.png')", "1 of 1 formulas were not typeset",
                "link to missing.html answers HTTP 404", "link to index.html#nowhere: no element with id 'nowhere'",
                "searching for 'saliency' found nothing"]
    for text in expected:
        assert sum(text in p for p in problems) >= 1, (text, problems)
    assert not any("#top" in p for p in problems)

"""Build the course website: the README as the front page, docs/, and the executed notebooks with
their figures, rendered by Sphinx with MyST-NB (navigation, search, MathJax served with the site).

    python website/build.py [--notebooks build] [--out build/site]

The notebooks are taken as they are in --notebooks (executed by `make notebooks`) and never run
again. The sources are staged in a temporary folder with the repository's layout (README.md becomes
index.md), so every relative link of the Markdown pages resolves on the site as in the repository;
a linked file that is not a page (LICENSE, a .tsv) is copied and becomes a download. Sphinx warnings
(a broken link, a missing page) fail the build. The site replaces --out only when complete.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEBSITE = ROOT / "website"
# Pages besides the front page and the notebooks: the reference docs and the data sets' README.
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "datasets" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of a Markdown link or image


def notebook_names() -> list[str]:
    """The course's notebooks in order, by stem (00_engine_and_layers, ...)."""
    return [path.stem for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))]


def relink(text: str, source: Path, staged: Path) -> str:
    """Rewrite a Markdown page's relative links for the staged tree; copy linked files that are not pages.

    Inputs:
    - text: the page's Markdown
    - source: where it is in the repository; staged: where it goes in the staging folder, which is laid
      out like the repository
    Returns the Markdown, with links to README.md pointing at index.md (the front page).
    """
    def fix(match):
        target = match.group(1)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        original = (source.parent / path).resolve()
        if original == ROOT / "README.md":
            target = str(Path(path).with_name("index.md")) + (f"#{anchor}" if anchor else "")
        elif original.is_file() and original.suffix not in (".md", ".ipynb"):
            copy = (staged.parent / path).resolve()
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, copy)
        return f"]({target})"

    return LINK.sub(fix, text)


def front_page(names: list[str], pages: list[Path]) -> str:
    """README.md with its notebook table linked to the notebooks, and the site's navigation (hidden
    toctrees: the sidebar lists them)."""
    text = (ROOT / "README.md").read_text()
    for name in names:
        text = text.replace(f"| `{name}` |", f"| [`{name}`](notebooks/{name}.ipynb) |")
    notebooks = "\n".join(f"notebooks/{name}" for name in names)
    reference = "\n".join(str(page.relative_to(ROOT).with_suffix("")) for page in pages)
    return (f"{text}\n\n```{{toctree}}\n:caption: Notebooks\n:hidden:\n\n{notebooks}\n```\n\n"
            f"```{{toctree}}\n:caption: Reference\n:hidden:\n\n{reference}\n```\n")


def stage(src: Path, notebooks: Path) -> list[str]:
    """Lay out the site's sources in src. Returns notes on notebooks that hold no outputs.

    Raises FileNotFoundError naming the command to run when an executed notebook is missing.
    """
    names = notebook_names()
    missing = [name for name in names if not (notebooks / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"no executed notebook {', '.join(missing)} in {notebooks}: run `make notebooks` "
                                f"first (or pass --notebooks DIR)")
    (src / "index.md").write_text(relink(front_page(names, PAGES), ROOT / "README.md", src / "index.md"))
    for page in PAGES:
        staged = src / page.relative_to(ROOT)
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(relink(page.read_text(), page, staged))
    shutil.copytree(ROOT / "docs" / "figures", src / "docs" / "figures", dirs_exist_ok=True)
    (src / "notebooks").mkdir(exist_ok=True)
    notes = []
    for name in names:
        shutil.copyfile(notebooks / f"{name}.ipynb", src / "notebooks" / f"{name}.ipynb")
        cells = json.loads((notebooks / f"{name}.ipynb").read_text())["cells"]
        if not any(cell.get("outputs") for cell in cells):
            notes.append(f"{name} has no outputs (not executed): its page shows the code without results")
    return notes


def build(notebooks: Path, out: Path) -> Path:
    """Stage the sources and run Sphinx; returns out, which holds index.html.

    Raises RuntimeError when Sphinx fails or warns (its messages are printed above).
    """
    from sphinx.cmd.build import build_main

    out = out.resolve()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="dlmie-site-") as tmp:
        src, doctrees = Path(tmp) / "src", Path(tmp) / "doctrees"
        src.mkdir()
        for note in stage(src, notebooks.resolve()):
            print("note:", note)
        status = build_main(["-b", "html", "-q", "-W", "--keep-going", "-c", str(WEBSITE), "-d", str(doctrees),
                             str(src), str(partial)])
    if status != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"Sphinx failed (exit status {status}): see its messages above")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "build",
                        help="folder of the executed notebooks (default: build/, as `make notebooks` leaves them)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="the site's folder (default: build/site)")
    args = parser.parse_args(argv)
    try:
        out = build(args.notebooks, args.out)
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"site: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

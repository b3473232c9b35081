"""How alike the code of the parts is across a class's submissions (python -m dlmie.grade --similarity).

Only the code a student wrote is compared: from each submission's files (read as the grader reads
them, grader.read_submission), the body of each part's function, found with ast and its docstring
left out; the handout's own lines in those bodies (hint comments, the lines around a region) are
copydetect's boilerplate, so that sharing them means nothing. copydetect (MOSS's winnowing over
tokens in which every name is replaced by one letter, so renaming variables hides nothing) compares
every pair of submissions; the report is its HTML page and a CSV of the most similar pairs.

A pair's similarity is the larger of its two shares: the fraction of one submission's fingerprinted
code that the other one also holds. Above THRESHOLD, a teacher should read the pair side by side.
"""

from __future__ import annotations

import ast
import csv
import re
import sys
import tempfile
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import matplotlib
import matplotlib.pyplot as plt
from copydetect import CopyDetector, compare_files

from dlmie.grading import atomic_output
from dlmie.teacher.grader import Handout, read_submission

# Recommended (docs/teaching.md): with copydetect's default thresholds, independent solutions of
# this assignment's short parts share up to about 0.3 of their code (the same NumPy calls in the
# same order); a copy with renamed variables and reordered lines keeps over 0.9.
THRESHOLD = 0.5
TOP = 50  # pairs in the CSV beyond those above the threshold


@dataclass(frozen=True)
class Pair:
    """Two submissions' shared code.

    - first, second: the students (zip names without .zip), in name order
    - shares: fraction of each one's code found in the other
    - tokens: length of the shared code, in tokens
    - lines: the first one's shared lines, as "part: line" strings
    """

    first: str
    second: str
    shares: tuple[float, float]
    tokens: int
    lines: tuple[str, ...]

    @property
    def similarity(self) -> float:
        return max(self.shares)


def part_bodies(text: str, functions: dict[str, str]) -> dict[str, str]:
    """The body of each part's function in one module, dedented, without its docstring.

    Inputs:
    - text: the module's source
    - functions: part name -> the function's qualified name in the module ("attend", "Counter.add_one")
    Returns:
    - part name -> body text, for the parts whose function is there (none when the text does not parse)
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    nodes = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                nodes[prefix + child.name] = child
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    lines = text.splitlines()
    bodies = {}
    for part, qualname in functions.items():
        node = nodes.get(qualname)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        documented = ast.get_docstring(node) is not None
        if len(node.body) > documented:
            # From the line after the docstring (hint comments included) to the function's end.
            start = node.body[0].end_lineno if documented else node.body[0].lineno - 1
            bodies[part] = textwrap.dedent("\n".join(lines[start : node.end_lineno])).strip("\n") + "\n"
    return bodies


def code_of(files: dict[str, bytes], manifest: dict) -> str:
    """One submission's code to compare: each part's body under a "# part: NAME" line, in the
    manifest's order; parts whose file is absent or does not parse are left out.

    Inputs:
    - files: path -> content, from read_submission
    - manifest: the handout's assignment.json
    """
    sections = []
    for rel in manifest["files"]:
        if rel not in files:
            continue
        module = ".".join(PurePosixPath(rel).with_suffix("").parts).removesuffix(".__init__")
        functions = {p["name"]: p["function"].removeprefix(module + ".") for p in manifest["parts"] if p["file"] == rel}
        sections += part_bodies(files[rel].decode("utf-8", "replace"), functions).items()
    order = [p["name"] for p in manifest["parts"]]
    return "".join(f"# part: {part}\n{body}\n" for part, body in sorted(sections, key=lambda s: order.index(s[0])))


def _lines(code: str, slices, public: set[str]) -> tuple[str, ...]:
    """The lines of `code` that copied slices (copydetect's 2 x M character ranges) touch, as "part: line".

    A slice may run on over the handout's lines around the student's (they tokenize alike): those,
    and comments, are left out (`public`: the handout's lines, stripped).
    """
    touched, offset, part = [], 0, ""
    ranges = list(zip(*slices)) if len(slices) else []
    for line in code.splitlines(keepends=True):
        if line.startswith("# part: "):
            part = line.removeprefix("# part: ").strip()
        elif (line.strip() and line.strip() not in public and not line.lstrip().startswith("#")
              and any(start < offset + len(line) and end > offset for start, end in ranges)):
            touched.append(f"{part}: {line.strip()}")
        offset += len(line)
    return tuple(touched)


def compare(folder: Path, handout_zip: Path, out: Path, threshold: float = THRESHOLD) -> list[Pair]:
    """Compare the parts' code of every submission in a folder; write <out>.html and <out>.csv.

    Inputs:
    - folder: one <student>.zip per student (hidden files skipped)
    - handout_zip: the handout they were written in (its part bodies are the boilerplate)
    - out: the report's path without suffix
    - threshold: pairs above it are flagged in the CSV and shown in the HTML report
    Returns:
    - every pair, most similar first
    Raises:
    - FileNotFoundError, ValueError: not a folder, fewer than two submissions with code, a bad handout
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of submissions")
    with tempfile.TemporaryDirectory(prefix="dlmie-similarity-") as tmp:
        tmp = Path(tmp)
        handout = Handout(handout_zip, tmp / "handout")
        manifest = handout.manifest
        own = {rel: (handout.root / rel).read_bytes() for rel in manifest["files"]}
        (tmp / "boilerplate").mkdir()
        boilerplate = code_of(own, manifest)
        (tmp / "boilerplate" / "handout.py").write_text(boilerplate, encoding="utf-8")
        codes = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            files, _ = read_submission(path, set(manifest["files"]))
            code = code_of(files, manifest)
            if code:
                codes[path.name.removesuffix(".zip")] = code
        if len(codes) < 2:
            raise ValueError(f"{folder}: fewer than two submissions hold code of the parts")
        (tmp / "code").mkdir()
        names = {}
        for n, (student, code) in enumerate(codes.items()):
            # copydetect's report names each file: the student's name, made safe for a file name.
            safe = re.sub(r"[^\w.-]", "_", student)
            path = tmp / "code" / (f"{safe}.py" if not (tmp / "code" / f"{safe}.py").exists() else f"{safe}_{n}.py")
            path.write_text(code, encoding="utf-8")
            names[str(path)] = student
        detector = CopyDetector(test_dirs=[str(tmp / "code")], ref_dirs=[str(tmp / "code")],
                                boilerplate_dirs=[str(tmp / "boilerplate")], extensions=["py"], display_t=threshold,
                                autoopen=False, silent=True, truncate=True)
        detector.run()
        # copydetect draws its plots on pyplot's current figure: a figure left open with another layout
        # engine (dlmie.plots uses constrained layout) would make its tight_layout raise.
        plt.close("all")
        with warnings.catch_warnings(), matplotlib.rc_context({"figure.constrained_layout.use": False}):
            warnings.simplefilter("ignore", DeprecationWarning)  # copydetect 0.5 reads its template with a deprecated call
            html = detector.generate_html_report(output_mode="return")
        # The report names the temporary files: say what they stand for.
        for temporary, meant in ((f"{tmp / 'code'}/", ""), (str(tmp / "code"), str(folder)),
                                 (str(tmp / "boilerplate"), f"the parts in {handout_zip}")):
            html = html.replace(temporary, meant)
        fingerprints = {names[path]: data for path, data in detector.file_data.items()}
    public = {line.strip() for line in boilerplate.splitlines()}
    students = sorted(fingerprints)
    pairs = []
    for i, first in enumerate(students):
        for second in students[i + 1 :]:
            tokens, shares, (slices, _) = compare_files(fingerprints[first], fingerprints[second])
            pairs.append(Pair(first, second, (float(shares[0]), float(shares[1])), int(tokens),
                              _lines(codes[first], slices, public)))
    pairs.sort(key=lambda p: -p.similarity)
    with atomic_output(out.with_suffix(".html")) as part:
        part.write_text(html, encoding="utf-8")
    _write_csv(out.with_suffix(".csv"), pairs, threshold)
    return pairs


def _write_csv(path: Path, pairs: list[Pair], threshold: float) -> None:
    shown = [p for n, p in enumerate(pairs) if n < TOP or p.similarity > threshold]
    with atomic_output(path) as part:
        with open(part, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["first", "second", "similarity", "first_share", "second_share", "shared_tokens",
                             "flagged", "shared_lines"])
            for p in shown:
                writer.writerow([p.first, p.second, f"{p.similarity:.2f}", f"{p.shares[0]:.2f}", f"{p.shares[1]:.2f}",
                                 p.tokens, "yes" if p.similarity > threshold else "", "\n".join(p.lines)])


def report(folder: Path, handout_zip: Path, out: Path) -> int:
    """The command (python -m dlmie.grade --similarity): compare, write, print the flagged pairs.

    Returns:
    - the exit status: 0, or 2 with the error on standard error
    """
    try:
        pairs = compare(folder, handout_zip, out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    flagged = [p for p in pairs if p.similarity > THRESHOLD]
    print(f"wrote {out.with_suffix('.html')} and {out.with_suffix('.csv')}: {len(pairs)} pairs, "
          f"{len(flagged)} above {THRESHOLD:g}")
    for p in flagged:
        print(f"  {p.first} and {p.second}: {p.similarity:.2f} ({len(p.lines)} shared lines)")
    return 0

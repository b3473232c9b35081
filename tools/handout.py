"""Build the student handout from the solution repository (make student).

    python tools/handout.py [--root DIR] [--out build/dlmie-student.zip]

A student region is a block of lines in dlmie/**/*.py between a line "### BEGIN SOLUTION" and a line
"### END SOLUTION" (each alone on its line, indented like the code they enclose), inside the body of
exactly one function. Its part is named after that function (unique over the tree). In the handout,
BEGIN..END inclusive becomes one line at the BEGIN marker's indentation,

    raise NotImplementedError("<part>: implement this part (see the docstring of <module>.<function>)")

and hint comments above the BEGIN marker stay.

The zip holds one top folder dlmie-student/ with the files of `git ls-files` minus EXCLUDED, regions
stubbed, notebooks without outputs, the manifest assignment.json (dlmie.assignment.read_manifest) and
a README.md made from tools/student_README.md. Before the zip is renamed into place, the build checks
that no marker text and no solution line survived (see check_handout).
"""

from __future__ import annotations

import argparse
import ast
import json
import string
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this repository's dlmie, whatever is installed

from dlmie.assignment import MANIFEST, stub_message  # noqa: E402
from dlmie.grading import HANDOUT_TOP, atomic_output, graded_tests, part_order  # noqa: E402
from dlmie.questions import PLACEHOLDER, questions_in  # noqa: E402
from dlmie.teacher import rubric  # noqa: E402

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
README_TEMPLATE = Path(__file__).with_name("student_README.md")

# What the handout leaves out, and why: each entry gives answers away or is teacher/developer material.
# An entry ending in "/" covers its folder; the most specific entry of EXCLUDED and KEPT decides.
EXCLUDED = {
    ".ci/": "CI of the solution repository: runs the solution's whole test suite",
    "tools/": "this builder and its README template (teacher tooling; it spells out the markers)",
    "tests/": "unit tests compare layers with NumPy references (dlmie/benchmarks/numpy_reference.py) and "
              "spell out LSTM and loss formulas",
    "tests/graded/make_fixtures.py": "computes the fixtures by calling the solution",
    "dlmie/benchmarks/": "numpy_reference computes the layers in NumPy",
    "dlmie/teacher/": "grading a class: hidden cases, the sandbox, the gradebook (the teacher's side of the trust boundary)",
    "dlmie/bench.py": "the benchmark command: needs dlmie/benchmarks/",
    "dlmie/kernels/lstm_c.py": "the LSTM cell's C code spells out lstm_step_forward/backward; without it the "
                               "LSTM Ops run the student's NumPy parts",
    "dlmie/kernels/batchnorm_c.py": "batch norm's C code spells out batchnorm_forward/backward; without it the "
                                    "batch norm Ops run the student's NumPy parts",
    "dlmie/models/show_attend_tell_bptt.py": "Show-Attend-Tell's written-out backward pass through time spells out "
                                             "lstm_backward_through_time; without it pytensor.grad derives the "
                                             "recurrence's backward pass (same gradients, slower)",
    "docs/engine.md": "describes how the LSTM backward pass and the kernels compute what the parts compute",
    "docs/teaching.md": "the teacher's guide (building, grading); the student README covers the student's side",
    "runs/": "the teacher's training state; the notebooks load dlmie/models/weights/",
    "README.md": "the solution's README (results, design notes); replaced by the student README",
}
KEPT = {
    "tests/conftest.py": "configures PyTensor before the graded tests import it",
    "tests/graded/": "the graded tests, their conftest and fixtures",
}


class MarkerError(ValueError):
    """Markers that do not make valid regions; the message lists each as file:line: problem."""


@dataclass(frozen=True)
class Region:
    """One student region.

    - part: the name of the function holding it
    - file: path relative to the root, e.g. "dlmie/kernels/lstm.py"
    - where: the function's dotted path, e.g. "dlmie.kernels.lstm.lstm_step_forward"
    - begin, end: 1-based lines of the BEGIN and END markers
    - indent: the BEGIN marker's indentation
    - summary: the first line of the function's docstring
    - solution: the lines strictly between the markers
    """

    part: str
    file: str
    where: str
    begin: int
    end: int
    indent: str
    summary: str
    solution: tuple[str, ...]

    @property
    def stub(self) -> str:
        return f'{self.indent}raise NotImplementedError("{stub_message(self.part, self.where)}")'


def excluded(path: str) -> str:
    """The reason `path` (relative, posix) is left out of the handout, or "" when it ships."""
    entries = [e for e in (*EXCLUDED, *KEPT) if path == e or (e.endswith("/") and path.startswith(e))]
    return EXCLUDED.get(max(entries, key=len), "") if entries else ""


def stub(text: str, regions: list[Region]) -> str:
    """`text` (a file holding `regions`) with each of `regions` replaced by its stub line.

    Inputs:
    - text: the solution file's content
    - regions: regions of that file, any subset (the CI proof stubs one at a time)
    Returns:
    - the stubbed content
    """
    lines = text.splitlines(keepends=True)
    for region in sorted(regions, key=lambda r: r.begin, reverse=True):
        newline = "\r\n" if lines[region.begin - 1].endswith("\r\n") else "\n"
        lines[region.begin - 1 : region.end] = [region.stub + newline]
    return "".join(lines)


def scan_file(rel: str, text: str) -> tuple[list[Region], list[str]]:
    """The regions of one file, and its marker errors ("file:line: problem").

    Inputs:
    - rel: the file's path relative to the root (names the module: dlmie/kernels/lstm.py -> dlmie.kernels.lstm)
    - text: its content
    Returns:
    - (regions in line order, errors); regions are only returned when there are no errors
    """
    lines = text.splitlines()
    errors, pairs, begin = [], [], None
    for number, line in enumerate(lines, 1):
        marker = line.strip()
        if (BEGIN in line or END in line) and marker not in (BEGIN, END):
            errors.append(f"{rel}:{number}: a marker must stand alone on its line")
        elif marker == BEGIN:
            if begin is not None:
                errors.append(f"{rel}:{number}: nested BEGIN (the region opened at line {begin} is not closed)")
            else:
                begin = number
        elif marker == END:
            if begin is None:
                errors.append(f"{rel}:{number}: END without a BEGIN")
            elif _indent(line) != _indent(lines[begin - 1]):
                errors.append(f"{rel}:{number}: END is not indented like its BEGIN (line {begin})")
                begin = None
            else:
                pairs.append((begin, number))
                begin = None
    if begin is not None:
        errors.append(f"{rel}:{begin}: BEGIN without an END")
    if errors or not pairs:
        return [], errors

    module = ".".join(PurePosixPath(rel).with_suffix("").parts).removesuffix(".__init__")
    # Locate each region by stubbing them all: a stub is a statement, so the function whose body
    # holds it is the region's function (comments, such as the markers, are not in the syntax tree).
    placeholder = [Region(f"_{i}", rel, "", b, e, _indent(lines[b - 1]), "", ()) for i, (b, e) in enumerate(pairs)]
    try:
        functions = _functions(ast.parse(stub(text, placeholder)))
        solution_functions = _functions(ast.parse(text))
    except SyntaxError as err:
        return [], [f"{rel}:{err.lineno}: does not parse (with its regions stubbed): {err.msg}"]
    regions, seen, removed = [], {}, 0
    for begin, end in pairs:
        code = [n for n in range(begin + 1, end) if lines[n - 1].strip() and not lines[n - 1].strip().startswith("#")]
        holder = _innermost(functions, begin - removed)
        removed += end - begin
        if holder is None:
            errors.append(f"{rel}:{begin}: region outside a function")
            continue
        node, qualname = holder
        if not code:
            errors.append(f"{rel}:{begin}: empty region in {qualname}")
            continue
        solution_node = next(n for n, q in solution_functions if q == qualname)
        if code[-1] > solution_node.end_lineno:
            errors.append(f"{rel}:{code[-1]}: the region runs past the end of {qualname}")
            continue
        if qualname in seen:
            errors.append(f"{rel}:{begin}: second region in {qualname} (the first is at line {seen[qualname]})")
            continue
        seen[qualname] = begin
        docstring = ast.get_docstring(solution_node)
        if not docstring:
            errors.append(f"{rel}:{begin}: {qualname} has no docstring (the stub sends the student to it)")
            continue
        regions.append(Region(node.name, rel, f"{module}.{qualname}", begin, end, _indent(lines[begin - 1]),
                              docstring.strip().splitlines()[0], tuple(lines[begin : end - 1])))
    return (regions if not errors else []), errors


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _functions(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """(node, qualified name) of every function and method in the tree."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((child, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _innermost(functions, line: int):
    holding = [(node, q) for node, q in functions if node.body[0].lineno <= line <= node.end_lineno]
    return max(holding, key=lambda f: f[0].lineno, default=None)


def find_regions(root: Path, files: list[str]) -> list[Region]:
    """Every region in the dlmie/ Python files among `files`.

    Inputs:
    - root: the solution repository
    - files: paths relative to root
    Returns:
    - regions, by file and line
    Raises:
    - MarkerError listing every problem (nested, unclosed or stray markers, a region outside a
      function, two regions in one function, duplicate part names, a file that no longer parses)
    """
    regions, errors = [], []
    for rel in sorted(f for f in files if f.startswith("dlmie/") and f.endswith(".py")):
        found, problems = scan_file(rel, (root / rel).read_text(encoding="utf-8"))
        regions += found
        errors += problems
    first: dict[str, Region] = {}
    for region in regions:
        if region.part in first:
            other = first[region.part]
            errors.append(f"{region.file}:{region.begin}: part name {region.part} is also used at "
                          f"{other.file}:{other.begin} (part names are function names and must be unique)")
        first.setdefault(region.part, region)
    if errors:
        raise MarkerError("student regions:\n  " + "\n  ".join(errors))
    return regions


def manifest(regions: list[Region], root: Path) -> dict:
    """The handout's assignment.json (see dlmie.assignment.read_manifest), checked against the tests
    and the rubric.

    Raises:
    - ValueError when a region has no graded test or a graded part has no region, or when the
      notebooks' inline questions and the rubric (dlmie/teacher/rubric/) do not match
    """
    tests = graded_tests(root)
    points: dict[str, int] = {}
    notebook: dict[str, str] = {}
    for test in tests:
        points[test.part] = points.get(test.part, 0) + test.points
        notebook.setdefault(test.part, test.notebook)
    by_part = {r.part: r for r in regions}
    problems = [f"{r.file}:{r.begin}: part {r.part} has no graded test in tests/graded" for r in regions if r.part not in points]
    problems += [f"graded tests name part {p}, which has no region in dlmie/" for p in points if p not in by_part]
    if problems:
        raise ValueError("parts and graded tests:\n  " + "\n  ".join(problems))
    parts = [{"name": p, "file": by_part[p].file, "function": by_part[p].where, "notebook": notebook[p], "points": points[p]}
             for p in part_order(tests)]
    questions = inline_questions(root)
    return {"parts": parts, "files": sorted({p["file"] for p in parts}), "total": sum(points.values()),
            "questions": questions, "manual_total": sum(q["points"] for q in questions)}


def inline_questions(root: Path) -> list[dict]:
    """The manifest's "questions": id, notebook and points of each inline question, in notebook order.

    Raises:
    - ValueError when a question has no answer cell or no rubric entry (or the entry names another
      notebook), a rubric entry has no question, or an answer cell holds more than the placeholder
      (a model answer would ship)
    """
    asked = questions_in(root)
    items = {item.id: item for item in rubric.load(Path(root) / "dlmie" / "teacher" / "rubric")}
    problems = []
    for path in sorted((Path(root) / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tags = [c.metadata.get("dlmie", {}) for c in nb.cells]
        answers = {t["answer"] for t in tags if "answer" in t}
        for cell, tag in zip(nb.cells, tags):
            if "answer" in tag and cell.source.strip() != PLACEHOLDER:
                problems.append(f"{path.name}: the answer cell of {tag['answer']} holds more than {PLACEHOLDER!r}")
        problems += [f"{path.name}: question {t['question']} has no answer cell" for t in tags
                     if "question" in t and t["question"] not in answers]
    for q in asked:
        if q.id not in items:
            problems.append(f"notebooks/{q.notebook}.ipynb: question {q.id} has no rubric entry")
        elif items[q.id].notebook != q.notebook:
            problems.append(f"question {q.id} is in {q.notebook} but its rubric entry in {items[q.id].notebook}.toml")
    problems += [f"rubric {i.notebook}.toml: {i.id} is asked in no notebook" for i in items.values()
                 if i.id not in {q.id for q in asked}]
    if problems:
        raise ValueError("inline questions:\n  " + "\n  ".join(problems))
    return [{"id": q.id, "notebook": q.notebook, "points": items[q.id].points} for q in asked]


def student_readme(assignment: dict, regions: list[Region]) -> str:
    """README.md of the handout: tools/student_README.md with its $parts table and $total filled in."""
    summary = {r.part: r.summary for r in regions}
    rows, current = [], None
    for p in assignment["parts"]:
        if p["notebook"] != current:
            current = p["notebook"]
            rows.append(f"\n**{f'notebooks/{current}.ipynb' if current else 'Other parts'}**\n")
        rows.append(f"- `{p['name']}` in `{p['file']}` ({p['points']} points): {summary[p['name']]}")
    template = string.Template(README_TEMPLATE.read_text(encoding="utf-8"))
    questions = assignment["questions"]
    listed = "\n".join(f"- `{q['id']}` in `notebooks/{q['notebook']}.ipynb` ({q['points']} points)" for q in questions)
    return template.substitute(parts="\n".join(rows).strip(), total=assignment["total"], count=len(assignment["parts"]),
                               questions=listed or "(none)", question_count=len(questions),
                               manual_total=assignment["manual_total"])


def clear_notebook(data: bytes) -> bytes:
    """A notebook without outputs, execution counts or execution timings."""
    nb = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return nbformat.writes(nb).encode("utf-8") + b"\n"


def check_handout(contents: dict[str, bytes], regions: list[Region], solution: dict[str, str]) -> list[str]:
    """What gives the answers away in the handout's contents ([] when nothing).

    Inputs:
    - contents: handout path -> bytes
    - regions: every region
    - solution: the solution text of each file holding regions
    Returns:
    - one line per problem: marker text in any file; a solution line of a region found in its
      stubbed file. Solution lines also written outside the regions of the solution file (such as
      "return out") are public anyway and not checked.
    """
    problems = []
    for path, data in sorted(contents.items()):
        text = data.decode("utf-8", errors="replace")
        for marker in (BEGIN, END):
            if marker in text:
                problems.append(f"{path}: marker text {marker!r} survived")
    for rel, text in solution.items():
        own = [r for r in regions if r.file == rel]
        inside = {n for r in own for n in range(r.begin, r.end + 1)}
        public = {ln.strip() for n, ln in enumerate(text.splitlines(), 1) if n not in inside}
        handout_lines = {ln.strip() for ln in contents[rel].decode("utf-8").splitlines()}
        for region in own:
            for offset, line in enumerate(region.solution, region.begin + 1):
                code = line.strip()
                if code and not code.startswith("#") and code not in public and code in handout_lines:
                    problems.append(f"{rel}:{offset}: solution line of {region.part} survived: {code}")
    return problems


def echoes(contents: dict[str, bytes], regions: list[Region], min_length: int = 30) -> list[str]:
    """Solution lines (of at least min_length characters) that another shipped Python file also holds.

    Not an error: a kernel or helper may compute the same thing on purpose. The teacher decides per
    case whether that file gives the answer away (and then excludes or reworks it).
    """
    python = {path: data.decode("utf-8", errors="replace") for path, data in contents.items() if path.endswith(".py")}
    notes = []
    for region in regions:
        for offset, line in enumerate(region.solution, region.begin + 1):
            code = line.strip()
            if len(code) < min_length or code.startswith("#"):
                continue
            for path, text in python.items():
                if path != region.file and code in text:
                    notes.append(f"{region.file}:{offset} ({region.part}) also appears in {path}: {code}")
    return notes


def tracked_files(root: Path) -> list[str]:
    """The files git tracks in root that exist in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    return sorted(f for f in out.decode("utf-8").split("\0") if f and (root / f).is_file())


def build(root: Path, out: Path) -> tuple[dict, list[str]]:
    """Write the handout zip of the solution repository `root` to `out` (atomically).

    Returns:
    - (the manifest, notes from echoes)
    Raises:
    - MarkerError or ValueError (bad markers, parts without tests, no regions at all), or
      RuntimeError when solution text survived (the zip is not written)
    """
    root = Path(root).resolve()
    files = tracked_files(root)
    shipped = [f for f in files if not excluded(f)]
    regions = find_regions(root, shipped)
    if not regions:
        raise ValueError(f"no student regions ({BEGIN} ... {END}) in {root}/dlmie")
    assignment = manifest(regions, root)

    solution = {r.file: (root / r.file).read_text(encoding="utf-8") for r in regions}
    contents: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for rel in shipped:
        path = root / rel
        modes[rel] = path.stat().st_mode & 0o777
        if rel in solution:
            contents[rel] = stub(solution[rel], [r for r in regions if r.file == rel]).encode("utf-8")
        elif rel.endswith(".ipynb"):
            contents[rel] = clear_notebook(path.read_bytes())
        else:
            contents[rel] = path.read_bytes()
    contents["README.md"] = student_readme(assignment, regions).encode("utf-8")
    contents[MANIFEST] = (json.dumps(assignment, indent=1) + "\n").encode("utf-8")

    problems = check_handout(contents, regions, solution)
    if problems:
        raise RuntimeError("the handout would give answers away:\n  " + "\n  ".join(problems))
    stamp = time.localtime()[:6]
    with atomic_output(out) as part:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in sorted(contents):
                info = zipfile.ZipInfo(f"{HANDOUT_TOP}/{rel}", stamp)
                info.external_attr = (0o100000 | modes.get(rel, 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, contents[rel])
    return assignment, echoes(contents, regions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/handout.py", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the solution repository (default: this one)")
    parser.add_argument("--out", type=Path, default=Path("build/dlmie-student.zip"), help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        assignment, notes = build(args.root, args.out)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(assignment['parts'])} parts, {assignment['total']} points")
    for p in assignment["parts"]:
        print(f"  {p['name']:<32} {p['points']:>3}  {p['file']}  {p['notebook']}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

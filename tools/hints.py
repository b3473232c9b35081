"""How much of each part's answer its hints give away, and how much the student writes.

    python tools/hints.py            a table: per part, the calls its solution makes and which of
                                     them the docstring or the comments above the region name

For each student region, the *calls* are the distinct names of the functions and methods its
solution calls (`np.tanh(x)` and `x.sum()` count as `tanh` and `sum`; builtins count too). A call
is *named* when its function's docstring or the comment lines directly above the region's BEGIN
marker mention it as code: `name(`, `.name` or `` `name` ``. A docstring that states the math
("the sum over t of ...") names nothing; one that says "call np.sum" names `sum`. The course's
bar is at most MAX_NAMED of a part's calls named (tests/test_hints.py), so that the hints give the
math and the shapes, and the notebook's collapsed hints the rest.

The *lines* of a part are the non-blank, non-comment lines of its solution.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import handout  # noqa: E402

MAX_NAMED = 0.25


@dataclass(frozen=True)
class HintMeasure:
    """One part: its calls, those its hints name, and its lines of solution."""

    part: str
    file: str
    calls: tuple[str, ...]
    named: tuple[str, ...]
    lines: int

    @property
    def named_share(self) -> float:
        return len(self.named) / len(self.calls) if self.calls else 0.0


def called_names(code: str) -> set[str]:
    """The names of the functions and methods called in `code` (a block of statements)."""
    tree = ast.parse(textwrap.dedent(code))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def hint_text(lines: list[str], region) -> str:
    """The docstring of the region's function and the comment lines right above its BEGIN marker."""
    above = []
    for line in reversed(lines[: region.begin - 1]):
        if not line.strip().startswith("#"):
            break
        above.append(line.strip())
    tree = ast.parse("\n".join(lines))
    function = next(node for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.lineno < region.begin <= node.end_lineno and node.name == region.part)
    return (ast.get_docstring(function) or "") + "\n" + "\n".join(reversed(above))


def is_named(name: str, text: str) -> bool:
    return re.search(rf"(\b{re.escape(name)}\s*\(|\.{re.escape(name)}\b|`{re.escape(name)}`)", text) is not None


def measure(root: Path = REPO) -> list[HintMeasure]:
    """One HintMeasure per region of the solution repository at `root`, in file and line order."""
    regions = handout.find_regions(root, handout.tracked_files(root))
    measures = []
    for region in regions:
        lines = (root / region.file).read_text(encoding="utf-8").splitlines()
        code = "\n".join(region.solution)
        calls = sorted(called_names(code))
        text = hint_text(lines, region)
        measures.append(HintMeasure(region.part, region.file, tuple(calls), tuple(c for c in calls if is_named(c, text)),
                                    sum(1 for ln in region.solution if ln.strip() and not ln.strip().startswith("#"))))
    return measures


def main(argv=None) -> int:
    measures = measure()
    width = max(len(m.part) for m in measures)
    print(f"{'part':{width}}  lines  calls  named  share  named calls")
    for m in measures:
        print(f"{m.part:{width}}  {m.lines:5d}  {len(m.calls):5d}  {len(m.named):5d}  {m.named_share:5.0%}  "
              f"{', '.join(m.named) or '-'}")
    calls = sum(len(m.calls) for m in measures)
    named = sum(len(m.named) for m in measures)
    print(f"{'all ' + str(len(measures)) + ' parts':{width}}  {sum(m.lines for m in measures):5d}  {calls:5d}  "
          f"{named:5d}  {named / max(calls, 1):5.0%}  (at most {MAX_NAMED:.0%} a part)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

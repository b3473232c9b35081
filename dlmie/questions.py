"""Inline questions: the answers a student writes in the notebooks, graded by hand.

A question is two consecutive markdown cells of a notebook:

- the question, with cell metadata {"dlmie": {"question": "<id>"}}, e.g. "**Inline question
  q01_guided** (3 points). Guided backpropagation ...";
- the answer cell, with metadata {"dlmie": {"answer": "<id>"}}, which reads PLACEHOLDER in the
  handout; the student writes the answer below it.

Ids are unique over the notebooks and start with the notebook's number. The points, a model answer
and the grading criteria are in the teacher's rubric (dlmie/teacher/rubric/, not in the handout).
`make submit` packs the notebooks and names the questions still unanswered; the teacher's grader
reads the answers from the submitted notebooks and lists them as items to grade by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = "*Your answer:*"


@dataclass(frozen=True)
class InlineQuestion:
    """One question of a notebook: its id, the notebook (its name without .ipynb), the question's
    text (the question cell's Markdown) and the answer (the answer cell's text without PLACEHOLDER;
    "" when unanswered)."""

    id: str
    notebook: str
    question: str
    answer: str


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _tag(cell: dict, key: str) -> str | None:
    meta = cell.get("metadata", {})
    value = meta.get("dlmie", {}).get(key) if isinstance(meta, dict) and isinstance(meta.get("dlmie"), dict) else None
    return value if isinstance(value, str) else None


def answer_text(source: str) -> str:
    """What a student wrote in an answer cell: its text without the placeholder, stripped."""
    text = source.strip()
    return text.removeprefix(PLACEHOLDER).strip()


def notebook_questions(data: bytes | str | dict, notebook: str) -> list[InlineQuestion]:
    """The inline questions of one notebook, in order, with the answers written in it.

    Inputs:
    - data: the notebook (.ipynb JSON as bytes or text, or parsed)
    - notebook: its name without .ipynb (stored in each question)
    Returns:
    - one InlineQuestion per question cell; its answer is "" when the answer cell is missing or
      holds only the placeholder
    Raises:
    - ValueError when `data` is not a notebook's JSON
    """
    nb = json.loads(data) if isinstance(data, (bytes, str)) else data
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise ValueError(f"{notebook}: not a notebook (no list of cells)")
    answers = {}
    for cell in cells:
        qid = _tag(cell, "answer") if isinstance(cell, dict) else None
        if qid is not None and cell.get("cell_type") == "markdown":
            answers[qid] = answer_text(_source(cell))
    return [InlineQuestion(qid, notebook, _source(cell), answers.get(qid, ""))
            for cell in cells if isinstance(cell, dict) and (qid := _tag(cell, "question")) is not None]


def questions_in(root: Path) -> list[InlineQuestion]:
    """The inline questions of every notebook in root/notebooks, in notebook order."""
    found = []
    for path in sorted((Path(root) / "notebooks").glob("*.ipynb")):
        found += notebook_questions(path.read_bytes(), path.stem)
    return found

"""The rubric of the inline questions (dlmie.questions): points, a model answer and criteria per
question, one TOML file per notebook in dlmie/teacher/rubric/ (teacher-only: not in the handout).

    [q01_guided]
    points = 3
    question = "why guided backprop looks sharper yet fails the cascading-randomization check"
    model_answer = \"\"\"...\"\"\"
    criteria = ["1 point: ...", "2 points: ..."]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

RUBRIC = Path(__file__).with_name("rubric")
FIELDS = {"points": int, "question": str, "model_answer": str, "criteria": list}


@dataclass(frozen=True)
class RubricItem:
    """One question's entry: its id, notebook (the file's stem), points, the question in one line,
    the model answer and the criteria."""

    id: str
    notebook: str
    points: int
    question: str
    model_answer: str
    criteria: tuple[str, ...]


def load(folder: Path = RUBRIC) -> list[RubricItem]:
    """Every question of the rubric, by notebook then in file order.

    Raises:
    - ValueError naming the file and question when an entry lacks a field, has one of the wrong
      type, has no positive points, or an id is used twice
    """
    items, seen, problems = [], {}, []
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from err
        for qid, entry in tables.items():
            where = f"{path.name} [{qid}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: not a table")
                continue
            wrong = [f"{k} ({t.__name__})" for k, t in FIELDS.items() if not isinstance(entry.get(k), t)]
            if wrong:
                problems.append(f"{where}: missing or of the wrong type: {', '.join(wrong)}")
                continue
            if entry["points"] <= 0:
                problems.append(f"{where}: points must be positive")
            if qid in seen:
                problems.append(f"{where}: id also used in {seen[qid]}")
            seen[qid] = path.name
            items.append(RubricItem(qid, path.stem, entry["points"], entry["question"], entry["model_answer"].strip(),
                                    tuple(str(c) for c in entry["criteria"])))
    if problems:
        raise ValueError("rubric of the inline questions:\n  " + "\n  ".join(problems))
    return items

"""The inline questions' answers of a class, for grading by hand.

The trusted side reads them from the submitted notebooks as JSON text (nothing of a submission is
run to get them) and writes one sheet per question: the question, the rubric's points, model answer
and criteria, then every student's answer, so that a question is graded across the class at once.
"""

from __future__ import annotations

from dlmie.questions import notebook_questions
from dlmie.teacher.rubric import RubricItem


def submission_answers(files: dict[str, bytes], questions: list[dict]) -> dict[str, str]:
    """The answers in one submission's notebooks.

    Inputs:
    - files: the submission's files (path in the handout -> content), as read_submission returns them
    - questions: the manifest's "questions" (id, notebook, points)
    Returns:
    - question id -> the answer ("" when the notebook is missing, is not a notebook, or the answer
      cell holds only the placeholder)
    """
    found = {}
    for notebook in sorted({q["notebook"] for q in questions}):
        data = files.get(f"notebooks/{notebook}.ipynb")
        if data is None:
            continue
        try:
            found |= {q.id: q.answer for q in notebook_questions(data.decode("utf-8", "replace"), notebook)}
        except ValueError:  # not JSON, or not a notebook: nothing answered there
            continue
    return {q["id"]: found.get(q["id"], "") for q in questions}


def answer_sheet(item: RubricItem, question: str, answers: dict[str, str]) -> str:
    """The Markdown sheet of one question.

    Inputs:
    - item: the question's rubric entry
    - question: the question's text as the notebook asks it
    - answers: student -> answer, in the gradebook's order
    Returns:
    - the question, the rubric, then one section per student (unanswered ones say so: 0 points)
    """
    lines = [f"# {item.id} ({item.points} points, notebook {item.notebook})", "", question.strip(), "",
             "## Rubric", "", "Model answer:", "", item.model_answer, "", *(f"- {c}" for c in item.criteria), "",
             "## Answers", ""]
    for student, answer in answers.items():
        # Quoted, so that a student's headings or HTML stay inside their own section.
        quoted = "\n".join("> " + line for line in answer.splitlines()) if answer else "*(no answer: 0 points)*"
        lines += [f"### {student}", "", quoted, ""]
    return "\n".join(lines)

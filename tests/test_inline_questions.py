"""Inline questions: the notebooks and the rubric agree, make submit names the unanswered ones, and
the teacher's side reads the answers as text into the gradebook and one sheet per question."""

import json
import shutil
from pathlib import Path

import pytest

import toy_assignment
from dlmie import grading
from dlmie.questions import PLACEHOLDER, notebook_questions, questions_in
from dlmie.teacher import answers, grader, rubric

REPO = Path(__file__).resolve().parents[1]
handout = toy_assignment.load_builder()

RUBRIC = '''[q01_why]
points = 2
question = "why it works"
model_answer = """Because."""
criteria = ["1 point: says because", "2 points: says why"]
'''


def md(source, **tag):
    return {"cell_type": "markdown", "id": f"m{abs(hash((source, *tag.items()))) % 10**8}",
            "metadata": {"dlmie": tag} if tag else {}, "source": source}


def notebook(*cells):
    return json.dumps({"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def question_pair(qid, answer=PLACEHOLDER):
    return (md(f"**Inline question {qid}** (2 points). Why?", question=qid), md(answer, answer=qid))


def test_the_notebooks_and_the_rubric_agree():
    listed = handout.inline_questions(REPO)  # raises when they do not
    items = {i.id: i for i in rubric.load()}
    assert [q["id"] for q in listed] == [q.id for q in questions_in(REPO)]
    for q in listed:
        assert q["id"].startswith("q" + q["notebook"][:2]) and q["points"] == items[q["id"]].points
        assert items[q["id"]].model_answer and items[q["id"]].criteria


def test_answers_are_read_without_the_placeholder():
    text = notebook(md("intro"), *question_pair("q01_a", f"{PLACEHOLDER}\n\nBecause the ReLU masks.\n"),
                    *question_pair("q01_b"))
    found = notebook_questions(text, "01_x")
    assert [(q.id, q.notebook, q.answer) for q in found] == [("q01_a", "01_x", "Because the ReLU masks."), ("q01_b", "01_x", "")]
    assert found[0].question.startswith("**Inline question q01_a**")


@pytest.mark.parametrize("data", [b"\x00not json", b"[1, 2]", b'{"cells": "no"}', b"\xff\xfe"])
def test_a_broken_notebook_answers_nothing(data):
    questions = [{"id": "q01_a", "notebook": "01_x", "points": 2}]
    assert answers.submission_answers({"notebooks/01_x.ipynb": data}, questions) == {"q01_a": ""}
    assert answers.submission_answers({}, questions) == {"q01_a": ""}


def _tree(tmp_path, answer=PLACEHOLDER, rubric_text=RUBRIC, with_question=True):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    cells = question_pair("q01_why", answer) if with_question else ()
    (root / "notebooks" / "01_x.ipynb").write_text(notebook(md("# 01"), *cells))
    (root / "dlmie" / "teacher" / "rubric").mkdir(parents=True)
    (root / "dlmie" / "teacher" / "rubric" / "01_x.toml").write_text(rubric_text)
    return root


def test_the_manifest_lists_the_questions_with_the_rubric_points(tmp_path):
    assert handout.inline_questions(_tree(tmp_path)) == [{"id": "q01_why", "notebook": "01_x", "points": 2}]


@pytest.mark.parametrize("change, message", [
    ({"answer": "The model answer, typed in the notebook."}, "holds more than"),
    ({"rubric_text": ""}, "q01_why has no rubric entry"),
    ({"with_question": False}, "q01_why is asked in no notebook"),
    ({"rubric_text": RUBRIC.replace("points = 2", "points = 0")}, "points must be positive"),
    ({"rubric_text": RUBRIC.replace('criteria = ["1 point: says because", "2 points: says why"]', "")}, "criteria (list)"),
])
def test_a_mismatch_stops_the_handout(tmp_path, change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        handout.inline_questions(_tree(tmp_path, **change))


def test_pack_names_the_unanswered_questions(tmp_path):
    root = tmp_path / "toy"
    toy_assignment.make_tree(root)
    built = tmp_path / "handout.zip"
    handout.build(root, built)
    student = tmp_path / "student"
    shutil.unpack_archive(built, student)
    student = student / grading.HANDOUT_TOP
    (student / "notebooks" / "02_more.ipynb").write_text(notebook(*question_pair("q02_a"), *question_pair("q02_b", "Yes.")))
    _, _, notes = grading.pack_submission(student)
    assert "notebooks/02_more.ipynb: inline question q02_a not answered (write the answer below '*Your answer:*' and save)" in notes
    assert not any("q02_b" in n for n in notes)


def test_the_answer_sheet_quotes_each_answer():
    item = rubric.RubricItem("q01_why", "01_x", 2, "why", "Because.", ("1 point: a", "2 points: b"))
    sheet = answers.answer_sheet(item, "**Inline question q01_why** Why?", {"ann": "# Heading\n<script>x</script>", "bob": ""})
    assert "> # Heading\n> <script>x</script>" in sheet and "*(no answer: 0 points)*" in sheet
    assert sheet.index("Model answer") < sheet.index("### ann") < sheet.index("### bob")


def test_gradebook_columns_for_grading_by_hand():
    questions = [{"id": "q01_a", "notebook": "01_x", "points": 2}, {"id": "q02_b", "notebook": "02_y", "points": 3}]
    header = grader.gradebook_header(["p"], questions)
    assert header[-2:] == ["q01_a (by hand, /2)", "q02_b (by hand, /3)"]
    grade = grader.SubmissionGrade("ann", [grading.PartScore("p", 1, 1, "")], [], "bwrap", answers={"q01_a": "", "q02_b": "text"})
    row = grader._row(grade, "ann", ["p"], 1, questions)
    assert row[-2:] == ["0", ""] and len(row) == len(header)
    # A regrade (--only) keeps what the teacher entered by hand, and fills only empty cells.
    old = row[:-2] + ["", "2.5"]
    new = grader._row(grade, "ann", ["p"], 1, questions)
    assert grader._place([old], new, ["ann"], len(header) - 2)[0][-2:] == ["0", "2.5"]

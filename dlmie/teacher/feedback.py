"""Feedback a student can act on: per part, passed or failed, on which kind of hidden case, and why.

What it says of a case is the table's description of its inputs (dlmie.parts, e.g. "N = 1,
stride 2, pad 0") and the grader's verdict: the first error line of the student's code, or the
relative error against its tolerance. Never an expected value or an input. A student's own error
line is text their code chose, and their code can read the hidden inputs it is given: numbers are
scrubbed from it (an array printed by accident), though code that means to leak can spell them.
The grader draws new inputs per run, so what leaks tells nothing about the next run's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dlmie.teacher.hidden import about

if TYPE_CHECKING:
    from dlmie.teacher.grader import SubmissionGrade

# A number with a fraction or an exponent, or a run of more than five whole numbers (an array's;
# a shape has at most five).
NUMBERS = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE][-+]?\d))(?:[eE][-+]?\d+)?|\d+(?:[\s,;()\[\]]+\d+){5,}")
LINE_CHARS = 300  # of a student's error line shown


def scrub(text: str) -> str:
    """A student's error line fit to hand back: its first line, numbers replaced by "…", shortened."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = NUMBERS.sub("…", line)
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…"


def markdown(grade: SubmissionGrade, possible: int) -> str:
    """The feedback file of one graded submission.

    Inputs:
    - grade: the submission's SubmissionGrade (its scores, issues and case results)
    - possible: the assignment's points
    Returns:
    - Markdown text: the score, what was wrong with the submission as a whole, the parts that passed
      every case, then each other part's points and cases
    """
    total = sum(s.earned for s in grade.scores)
    lines = [f"# Feedback for {grade.student}", "",
             f"**Score: {total} / {possible}.** Graded on hidden cases: the same kinds of inputs as your "
             f"practice checks, other values.", ""]
    if grade.issues:
        lines += ["About the submission as a whole:", ""]
        lines += [f"- `{i.code}`: {scrub(i.detail) if i.code == 'import_error' else i.detail}" for i in grade.issues]
        lines.append("")
    if grade.answers:
        answered = [q for q, a in grade.answers.items() if a]
        lines += [f"Inline questions: {len(answered)} of {len(grade.answers)} answered; your teacher grades the "
                  "answers by hand." + (" Not answered: " + ", ".join(q for q, a in grade.answers.items() if not a) + "."
                                         if len(answered) < len(grade.answers) else ""), ""]
    if not grade.results:
        return "\n".join(lines + ["No part was graded.", ""])
    full = [s for s in grade.scores if s.earned == s.possible]
    if full:
        lines += ["## Passed on every case", "", ", ".join(f"{s.name} ({s.earned} / {s.possible})" for s in full), ""]
    for score in grade.scores:
        if score in full:
            continue
        results = [r for r in grade.results if r.part == score.name]
        lines += [f"## {score.name}: {score.earned} / {score.possible}", ""]
        for r in results:
            if r.verdict.passed:
                lines.append(f"- passed: {about(r.case)}")
            else:
                note = scrub(r.verdict.note) if r.verdict.theirs else r.verdict.note
                lines.append(f"- **failed**: {about(r.case)}: {note}")
        if score.earned == 0 and any(r.verdict.passed for r in results):
            lines.append("- raising the right error counts only when the part also computes one of its other "
                         "cases right")
        lines.append("")
    return "\n".join(lines)

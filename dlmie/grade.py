"""Run the graded tests and print points per part; pack a submission; grade a class's submissions.

    python -m dlmie.grade [--part NAME]                  one row per part, last line "score: X/Y"
    python -m dlmie.grade --pack [--out ZIP]             the student's build/submission.zip (make submit)
    python -m dlmie.grade --submissions DIR [--handout ZIP] [--out CSV] [--seed N] [--memory GIB]
                          [--timeout S] [--test-timeout S] [--jobs N] [--id-pattern REGEX] [--only NAME]
    python -m dlmie.grade --similarity DIR [--handout ZIP] [--out STEM]
                                                         how alike the parts' code is: STEM.html, STEM.csv

--submissions (the teacher's side, in the solution repository) grades each student's parts on hidden
inputs in a sandboxed worker process, one per submission; see docs/teaching.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from dlmie.assignment import ROOT
from dlmie.grading import (
    format_scores,
    graded_tests,
    pack_submission,
    part_order,
    run_graded,
    score,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlmie.grade",
        description=__doc__.split("\n")[0],
        epilog="--submissions runs each student's code in a sandbox (bubblewrap where the machine has it; "
        "it says so when it has not) on hidden inputs; see docs/teaching.md.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--part", metavar="NAME", help="run only this part's tests (with their tracebacks)")
    mode.add_argument("--pack", action="store_true", help="zip the files holding parts and the notebooks (make submit)")
    mode.add_argument("--submissions", type=Path, metavar="DIR", help="grade every <student>.zip in DIR into a CSV gradebook")
    mode.add_argument("--similarity", type=Path, metavar="DIR",
                      help="compare the parts' code across the submissions in DIR (an HTML report and a CSV of pairs)")
    parser.add_argument("--handout", type=Path, default=Path("build/dlmie-student.zip"),
                        help="with --submissions, --similarity: the handout to grade against (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="--pack: the zip (default: build/submission.zip); "
                        "--submissions: the gradebook (default: gradebook.csv); "
                        "--similarity: the report's path without suffix (default: similarity)")
    parser.add_argument("--timeout", type=float, default=600, metavar="S",
                        help="with --submissions: wall-clock limit of one submission's cases (default: %(default)g)")
    parser.add_argument("--test-timeout", type=float, default=60, metavar="S",
                        help="with --submissions: wall-clock limit of one case (default: %(default)g)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="with --submissions: the hidden cases' seed (default: a new one, written to the logs' run.log)")
    parser.add_argument("--memory", type=float, default=4, metavar="GIB",
                        help="with --submissions: memory limit of a student's worker in GiB (default: %(default)g)")
    parser.add_argument("--jobs", type=int, default=_cores(), metavar="N",
                        help="with --submissions: submissions graded at once (default: the cores, %(default)s)")
    parser.add_argument("--id-pattern", metavar="REGEX",
                        help="with --submissions: finds the student's LMS id in each file name without .zip, for the "
                        "gradebook's id column (its first group if it has one; default: the whole name)")
    parser.add_argument("--only", metavar="NAME",
                        help="with --submissions: regrade this one submission of DIR and replace its row in the "
                        "gradebook (on the seed of the gradebook's run.log unless --seed)")
    args = parser.parse_args(argv)

    if args.submissions is None and (args.only or args.id_pattern):
        print("error: --only and --id-pattern go with --submissions DIR", file=sys.stderr)
        return 2

    if args.pack:
        try:
            out, members, notes = pack_submission(ROOT, args.out)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {out} ({len(members)} files): hand it in as your teacher asks")
        for note in notes:
            print(f"note: {note}")
        return 0

    if args.submissions is not None:
        if not args.submissions.is_dir():
            print(f"error: {args.submissions} is not a folder", file=sys.stderr)
            return 2
        if args.jobs < 1:
            print(f"error: --jobs must be at least 1, not {args.jobs}", file=sys.stderr)
            return 2
        if args.id_pattern is not None:
            try:
                re.compile(args.id_pattern)
            except re.error as err:
                print(f"error: --id-pattern {args.id_pattern!r} is not a regular expression: {err}", file=sys.stderr)
                return 2
        out = args.out or Path("gradebook.csv")
        try:
            from dlmie.teacher.grader import Settings, grade_submissions
            from dlmie.teacher.sandbox import GiB, Limits
        except ImportError:
            print("error: grading submissions runs in the solution repository (dlmie/teacher/ is not in the handout)",
                  file=sys.stderr)
            return 2
        limits = Limits(memory=int(args.memory * GiB), cpu_seconds=int(args.timeout))
        settings = Settings(args.timeout, args.test_timeout, limits, args.seed, jobs=args.jobs)
        try:
            grades = grade_submissions(args.submissions, args.handout, out, settings, id_pattern=args.id_pattern,
                                       only=args.only, bar=sys.stdout.isatty())
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        answers = out.with_name(out.stem + "_answers")
        print(f"wrote {out} ({len(grades)} submission{'s' * (len(grades) != 1)} graded; logs in "
              f"{out.with_name(out.stem + '_logs')}, feedback for the students in {out.with_name(out.stem + '_feedback')}"
              + (f", the inline questions' answers to grade by hand in {answers}" if answers.is_dir() else "") + ")")
        return 0

    if args.similarity is not None:
        try:
            from dlmie.teacher.similarity import report
        except ImportError:
            print("error: the similarity report runs in the solution repository (dlmie/teacher/ is not in the handout)",
                  file=sys.stderr)
            return 2
        return report(args.similarity, args.handout, args.out or Path("similarity"))

    try:
        tests = graded_tests(ROOT)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parts = part_order(tests)
    if not parts:
        print(f"error: no graded tests in {ROOT}/tests/graded", file=sys.stderr)
        return 2
    if args.part is not None and args.part not in parts:
        print(f"error: unknown part {args.part!r}; the parts are: {', '.join(parts)}", file=sys.stderr)
        return 2
    run = run_graded(ROOT, part=args.part)
    print()
    if run.returncode not in (0, 1):
        print(f"warning: the test run ended with exit status {run.returncode}; parts not run earn nothing")
    print(format_scores(score(tests, run, part=args.part)))
    return 0 if run.returncode in (0, 1) else 1


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())

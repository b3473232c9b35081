"""The teacher's side of the assignment, in the solution repository only (the handout leaves this
folder out): hidden cases and the solution's outputs on them (hidden.py), the sandbox that runs
students' code (sandbox.py), and grading a class into a gradebook (grader.py)."""

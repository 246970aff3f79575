"""Reference solutions to the exercises, one module per exercise (``exNN_name.py``).

Instructor side only: this folder is not part of the tinytf wheel and `tinytf exercises
init` never copies it. The grader computes every expected value of a graded run with
these, in the grading process; the sandboxed child process cannot read them. Each is
plain numpy in float64 and self-contained: the mutants (classic mistakes, see the
catalogue) are text patches of these files, so a reference must stay one readable
function per exercise function. After editing one, rebuild the student-side bundle
with `tinytf exercises bundle` (the tests check that it is up to date).
"""

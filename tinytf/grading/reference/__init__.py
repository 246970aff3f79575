"""Reference solutions to the exercises, one module per exercise (``exNN_name.py``).

The grader computes every expected value with these, in the grading process.
They live inside the package, so `tinytf exercises init` never copies them into a
student's workspace, and the grader's child process cannot read them (see
`tinytf.grading.sandbox`). Each is plain numpy in float64 and self-contained: the
mutants (classic mistakes, see the catalogue modules) are text patches of these
files, so a reference must stay one readable function per exercise function.
"""

"""What a user runs: the top layer of tinytf.

Everything here is a program built on the library below it; nothing in the library
imports from here.

  cli.py          `tinytf ...`: a table of contents of the subcommands
  lessons.py      the lesson registry and runner (`tinytf lessons`, `tinytf lesson ID`)
  claims.py       Claim and LessonResult: what a lesson measured and states
  demo.py         `tinytf demo`: attention maps of a tiny model
  bench.py        `tinytf bench attention|train|presets`
  bench_train.py  the training benchmarks (fit vs nnx.jit vs stock flax layers)
  detr_recipe.py  `tinytf detr train`: the DETR training and evaluation recipe

The autograder (`tinytf.grading`) sits in this layer too.
"""

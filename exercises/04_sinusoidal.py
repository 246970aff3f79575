"""Exercise 4 — sinusoidal position encodings.             Lesson: positions

Attention by itself does not know the order of its inputs: shuffle the tokens and
the outputs shuffle the same way. Vaswani et al. 2017 (section 3.5) add a fixed
code to each position's embedding, made of sines and cosines of geometrically
spaced frequencies:

    PE[p, 2i]   = sin(p * w_i)
    PE[p, 2i+1] = cos(p * w_i),     w_i = base^(-2i / dim),  i = 0 .. dim/2 - 1

(interleaved: even columns sine, odd columns cosine of the same frequency; this is
what tinytf.positional.sinusoidal computes). Positions start at 0.
Use numpy or jax.numpy.
"""

import numpy as np


def sinusoidal_encoding(length, dim, base=10000.0):
    """Sinusoidal position encodings.

    Args:
      length: number of positions (p = 0 .. length - 1).
      dim: width of the code; must be even.
      base: the frequency base (10000 in the paper).

    Returns:
      (length, dim) float array PE as defined above.

    Raises:
      ValueError: if dim is odd (name the argument and the value in the message).
    """
    raise NotImplementedError("Exercise 4: write sinusoidal_encoding")

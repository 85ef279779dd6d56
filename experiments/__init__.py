"""The paper's experiments and the benchmarks.

Importing dltk_mm first sets its TensorFlow environment defaults (dltk_mm.runtime) for every
driver and benchmark here, whatever they import next.
"""

import dltk_mm  # noqa: F401

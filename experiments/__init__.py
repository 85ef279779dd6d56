"""The benchmarks' scripts (``python -m experiments.bench.<script>`` from the repository root).

Not installed (setup.py installs dltk_mm only): the paper's driver is library code,
:mod:`dltk_mm.benchmark` (``dltk-mm-benchmark``); ``experiments/paper/`` keeps its flagfiles,
README and figures. Importing dltk_mm first sets its TensorFlow environment defaults
(dltk_mm.runtime) for every script here, whatever they import next.
"""

import dltk_mm  # noqa: F401

"""dltk_mm.cli: the ``dltk-mm-*`` absl command lines.

TensorFlow's C++ start-up messages are hidden in the commands (``TF_CPP_MIN_LOG_LEVEL=2`` unless
the environment sets it); the commands print their own progress.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""dltk_mm.cli: the ``dltk-mm-*`` absl command lines.

TensorFlow's start-up messages are kept out of the commands' stderr where the user has not set
``TF_CPP_MIN_LOG_LEVEL`` (:func:`dltk_mm.runtime.quiet_tensorflow_startup`); errors still show.
The commands print their own progress; exit statuses and the fast-refusal pattern are in
:mod:`dltk_mm.cli._common`.
"""

from dltk_mm.runtime import quiet_tensorflow_startup

quiet_tensorflow_startup()

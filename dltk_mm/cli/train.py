"""``dltk-mm-train``: train a multi-modal segmentation network (Valindria et al., WACV 2018).

Example (the paper's V4 scheme on fold 0 of a 2-fold split, paper defaults otherwise)::

    dltk-mm-train --manifest=data/manifest.csv --model_dir=runs/v4_fold0 --scheme=v4 --fold=0

Rerunning the same command resumes from the newest checkpoint (and says so). A different
configuration in an existing model folder is refused with the differing options named; pass
``--restart`` to move the old run to ``<model_dir>/previous_<time>/`` and start over. Options may
also come from a file: ``--flagfile=run.flags``; ``--helpfull`` lists every flag. Library logs
(absl) are shown from warnings up; ``--verbosity=0`` shows the informational ones too.

``--recipe`` picks the named settings the flags are layered on: ``paper`` (the default, the
paper's protocol) or ``plus`` (see :mod:`dltk_mm.training.recipes`); a flag given always wins
over the recipe, and ``config.json`` records the resolved settings and the recipe's name.

Exit status (the convention of every dltk-mm command, :mod:`dltk_mm.cli._common`): 0 trained (or
already complete); 2 bad options or input data (one line naming the file and the fix; the
manifest is read before TensorFlow is imported, so a bad one is refused at once); 130 stopped by
SIGINT (Ctrl-C) and 143 stopped by SIGTERM - in both cases after saving a checkpoint: rerun the
same command to resume.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from dltk_mm import flag_fields
from dltk_mm.cli._common import fail, handle_errors, interrupted_status, run_command
from dltk_mm.errors import ConfigurationError, DltkMmError

FLAGS = flags.FLAGS

#: absl's help flags: with one of them the command only prints the flags.
_HELP_FLAGS = ("-?", "-h", "--help", "--helpshort", "--helpfull", "--helpxml")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command's flags in ``flag_values`` (called by :func:`run`): one per
    :class:`~dltk_mm.training.config.TrainConfig` field (:mod:`dltk_mm.training.config_flags`),
    plus ``--model_dir`` and ``--restart``.

    Flags are not defined at import so that other commands' flags of the same names can live in
    the same process (e.g. tests), and so that importing this module stays free of TensorFlow
    (deriving the flags imports the configuration classes, which import it).
    """
    from dltk_mm.training.config_flags import define_train_flags

    define_train_flags(flag_values)
    flags.DEFINE_string("model_dir", None, "Output folder of the run (config, checkpoints, best "
                        "model, history, TensorBoard logs).", flag_values=flag_values)
    flags.DEFINE_bool("restart", False, "Start over in a model_dir holding a run; its files are "
                      "moved to <model_dir>/previous_<time>/ (nothing is deleted).",
                      flag_values=flag_values)
    flags.mark_flag_as_required("model_dir", flag_values=flag_values)
    flags.adopt_module_key_flags(flag_fields, flag_values=flag_values)  # listed by --help


def check_before_tensorflow(argv: Sequence[str]) -> None:
    """The checks that need no TensorFlow, made before it is imported (a refusal comes at once).

    Reads ``--manifest`` and ``--model_dir`` from ``argv`` (flagfiles expanded; the other flags
    are left to the full parse) and checks that the manifest is a readable, valid manifest whose
    files exist (:func:`dltk_mm.io.manifest.load_manifest`) and that the model folder is not a
    file. With a help flag, or flags this light parse cannot read, nothing is checked here.

    Raises:
        DltkMmError: naming the file and the fix.
    """
    light = flags.FlagValues()
    flags.DEFINE_string("manifest", None, "", flag_values=light)
    flags.DEFINE_string("model_dir", None, "", flag_values=light)
    try:
        rest = light(list(argv), known_only=True)
    except flags.Error:
        return  # the full parse reports it, with the usual message
    if any(arg.split("=")[0] in _HELP_FLAGS for arg in rest):
        return
    if light.model_dir and Path(light.model_dir).expanduser().is_file():
        raise ConfigurationError(f"--model_dir {light.model_dir} is a file; give the folder of "
                                 "the run (created if missing)")
    if light.manifest:
        from dltk_mm.io.manifest import load_manifest  # no TensorFlow

        load_manifest(light.manifest)


@handle_errors
def main(argv: list[str]) -> int:
    """Trains per the flags; returns the exit status."""
    del argv
    from dltk_mm.cli._train_console import ConsoleReporter  # imports TensorFlow
    from dltk_mm.training.config_flags import config_from_flags
    from dltk_mm.training.trainer import train

    config = config_from_flags(FLAGS)
    result = train(config, FLAGS.model_dir, callbacks=[ConsoleReporter()], restart=FLAGS.restart)
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.step}; rerun the same command to resume", flush=True)
        return interrupted_status(result.interrupted_by)
    return 0


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``dltk-mm-train``).

    Args:
        argv: the command line (default ``sys.argv``).
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        check_before_tensorflow(argv)
    except DltkMmError as error:
        fail(str(error))
    define_flags(FLAGS)
    run_command(main, argv)


if __name__ == "__main__":
    run()

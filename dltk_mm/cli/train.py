"""``dltk-mm-train``: train a multi-modal segmentation network (Valindria et al., WACV 2018).

Example (the paper's V4 scheme on fold 0 of a 2-fold split, paper defaults otherwise)::

    dltk-mm-train --manifest=data/manifest.csv --model_dir=runs/v4_fold0 --scheme=v4 --fold=0

Rerunning the same command resumes from the newest checkpoint (and says so). A different
configuration in an existing model folder is refused with the differing options named; pass
``--restart`` to move the old run to ``<model_dir>/previous_<time>/`` and start over. Options may
also come from a file: ``--flagfile=run.flags``; ``--helpfull`` lists every flag. Library logs
(absl) are shown from warnings up; ``--verbosity=0`` shows the informational ones too.

Exit status: 0 trained (or already complete); 2 bad options or input data (one-line message);
1 command-line usage error; 130 stopped by SIGINT (Ctrl-C) and 143 stopped by SIGTERM - in both
cases after saving a checkpoint: rerun the same command to resume.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
from absl import app, flags

from dltk_mm.cli._common import handle_errors
from dltk_mm.io.augmentation import AugmentationConfig
from dltk_mm.io.labels import PRESETS
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import NORMALISATIONS, PreprocessingConfig
from dltk_mm.networks.schemes import SCHEMES
from dltk_mm.training.callbacks import TrainingCallback
from dltk_mm.training.config import SUPPORTED_STRATEGIES, NetworkConfig, TrainConfig
from dltk_mm.training.trainer import TrainingInfo, TrainResult, ValidationResult, train

FLAGS = flags.FLAGS

#: Exit status after SIGINT / SIGTERM (the shell convention 128 + signal number).
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
LOSSES = ("dice", "cross_entropy", "dice_cross_entropy")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command's flags in ``flag_values`` (called by :func:`run`).

    Flags are not defined at import so that other commands' flags of the same names can live in
    the same process (e.g. tests).
    """
    fv = flag_values
    defaults = TrainConfig(manifest="", scheme="joint")
    network, pipeline, preprocessing = NetworkConfig(), PipelineConfig(), PreprocessingConfig()
    augmentation = AugmentationConfig()
    # data
    flags.DEFINE_string("manifest", None, "Manifest CSV (subject_id, modality, image, label[, "
                        "fold]) of the training data.", flag_values=fv)
    flags.DEFINE_string("model_dir", None, "Output folder of the run (config, checkpoints, best "
                        "model, history, TensorBoard logs).", flag_values=fv)
    flags.DEFINE_list("modalities", list(defaults.modalities), "Ordered modalities; one gives a "
                      "single-modality model.", flag_values=fv)
    flags.DEFINE_list("order", None, "Cycle of batch modalities (default: --modalities, i.e. MR, "
                      "CT, MR, ...).", flag_values=fv)
    flags.DEFINE_integer("fold", defaults.fold, "Held-out fold for validation; -1 trains on "
                         "every subject without validation.", lower_bound=-1, flag_values=fv)
    flags.DEFINE_integer("num_folds", defaults.num_folds, "Folds of the per-modality seeded split "
                         "when the manifest has no 'fold' column (paper: 2).", lower_bound=2,
                         flag_values=fv)
    flags.DEFINE_integer("split_seed", defaults.split_seed, "Seed of that split (keep it fixed "
                         "across repetitions).", flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "Preprocessing cache (default: <manifest folder>/"
                        ".dltk_mm_cache if writable, else <model_dir>/cache).", flag_values=fv)
    # preprocessing
    flags.DEFINE_float("spacing_mm", preprocessing.spacing_mm, "Isotropic voxel size, mm.",
                       flag_values=fv)
    flags.DEFINE_enum("normalisation", preprocessing.normalisation, list(NORMALISATIONS),
                      "Z-score per volume (paper) or per axial slice (code).", flag_values=fv)
    flags.DEFINE_enum("label_preset", preprocessing.label_preset, sorted(PRESETS),
                      "How the label files' ids map to the project's labels.", flag_values=fv)
    flags.DEFINE_bool("allow_unknown_labels", preprocessing.allow_unknown_labels,
                      "Map label ids unknown to the preset to background.", flag_values=fv)
    flags.DEFINE_bool("crop_to_organs", preprocessing.crop_to_organs,
                      "Crop to the box covering the four organs.", flag_values=fv)
    flags.DEFINE_float("crop_margin_mm", preprocessing.crop_margin_mm,
                       "Margin around the organ box, mm.", flag_values=fv)
    flags.DEFINE_float("ct_clip_min", preprocessing.ct_clip_min,
                       "CT values below this (HU) are clipped.", flag_values=fv)
    # network
    flags.DEFINE_enum("scheme", None, list(SCHEMES), "Training scheme (paper: individual, joint, "
                      "v1-v4).", flag_values=fv)
    flags.DEFINE_integer("num_classes", network.num_classes, "Classes including background.",
                         lower_bound=2, flag_values=fv)
    flags.DEFINE_list("filters", [str(f) for f in network.filters],
                      "Channels of the stem and residual scales at width 1.", flag_values=fv)
    flags.DEFINE_list("strides", [str(s) for s in network.strides],
                      "Strides of the stem and residual scales.", flag_values=fv)
    flags.DEFINE_float("width", network.width, "Multiplies --filters (smaller networks).",
                       flag_values=fv)
    flags.DEFINE_integer("num_res_units", network.num_res_units, "Residual units per scale.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("strided_kernel", network.strided_kernel, ["paper", "code"],
                      "Strided conv kernel: twice the stride (paper) or the stride (code).",
                      flag_values=fv)
    flags.DEFINE_enum("upscore_kernel", network.upscore_kernel, ["paper", "code"],
                      "Upscore reduction conv: 1^3 (paper) or 3^3 (code).", flag_values=fv)
    flags.DEFINE_enum("upsample_border", network.upsample_border, ["replicate", "zero"],
                      "Linear upsampling border: replicate (true interpolation) or zero (code).",
                      flag_values=fv)
    # input pipeline
    flags.DEFINE_list("patch_size", [str(pipeline.patch_size[0])],
                      "Patch size: one int (cubic) or z,y,x (paper: 64).", flag_values=fv)
    flags.DEFINE_integer("batch_size", pipeline.batch_size, "Patches per batch (paper: 16).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("sampling", pipeline.sampling, ["balanced", "uniform"],
                      "Patch sampling: class-balanced (paper code) or uniform.", flag_values=fv)
    flags.DEFINE_integer("max_centres_per_class", pipeline.max_centres_per_class,
                         "Balanced sampling: centres per class and volume read.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_list("jitter", [str(j) for j in pipeline.jitter],
                      "Balanced sampling: low,high jitter of the centres (voxels).",
                      flag_values=fv)
    flags.DEFINE_integer("patches_per_volume", pipeline.patches_per_volume,
                         "Uniform sampling: patches per volume read.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("shuffle_buffer", pipeline.shuffle_buffer,
                         "Patch shuffle buffer.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("noise_sigma", augmentation.noise_sigma,
                       "Gaussian noise sigma (paper 0.1; 0 = off).", flag_values=fv)
    flags.DEFINE_float("offset_sigma", augmentation.offset_sigma,
                       "Intensity offset sigma (paper 0.1; 0 = off).", flag_values=fv)
    flags.DEFINE_list("flip_axes", [], "Random flip axes among 0 (z), 1 (y), 2 (x; swaps the "
                      "kidney labels); paper: none.", flag_values=fv)
    # optimisation
    flags.DEFINE_float("learning_rate", None, "Adam learning rate (default: the scheme's paper "
                       "value, 1e-3 individual/joint, 1e-4 dual-stream).", flag_values=fv)
    flags.DEFINE_enum("loss", defaults.loss, list(LOSSES), "Loss (paper: soft Dice).",
                      flag_values=fv)
    flags.DEFINE_integer("steps", defaults.steps, "Optimiser steps in total (paper: 10000).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", defaults.seed, "Seed of initialisation and input pipeline.",
                         flag_values=fv)
    flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (with the seeds: "
                      "repeatable runs, slower on GPU).", flag_values=fv)
    flags.DEFINE_bool("jit_compile", defaults.jit_compile, "XLA-compile the training step and "
                      "validation (measured slower on CPU; see experiments/bench/README.md).",
                      flag_values=fv)
    flags.DEFINE_enum("strategy", defaults.strategy, list(SUPPORTED_STRATEGIES),
                      "Distribution: default (one device), mirrored (all local GPUs), "
                      "multi_worker (processes/machines from TF_CONFIG; see docs/distributed.md)."
                      " --batch_size is the global batch.", flag_values=fv)
    flags.DEFINE_bool("mixed_precision", defaults.mixed_precision,
                      "mixed_float16 compute with dynamic loss scaling (variables, logits and "
                      "loss in float32); for GPUs with tensor cores.", flag_values=fv)
    # schedule
    flags.DEFINE_integer("validation_interval", defaults.validation_interval,
                         "Validate every this many steps (and at the end).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("validation_overlap", defaults.validation_overlap,
                       "Sliding-window overlap of the validation.", flag_values=fv)
    flags.DEFINE_integer("validation_batch_size", None, "Windows per validation forward pass "
                         "(default: --batch_size).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("checkpoint_interval", defaults.checkpoint_interval,
                         "Checkpoint every this many steps (and at the end and on SIGINT/"
                         "SIGTERM).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("keep_checkpoints", defaults.keep_checkpoints,
                         "Recent checkpoints kept.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("log_interval", defaults.log_interval,
                         "Write mean losses (history.csv, TensorBoard) every this many steps.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("checkpoint_input_pipeline", defaults.checkpoint_input_pipeline,
                      "Save the input pipeline's position with each checkpoint (exact resume).",
                      flag_values=fv)
    flags.DEFINE_bool("restart", False, "Start over in a model_dir holding a run; its files are "
                      "moved to <model_dir>/previous_<time>/ (nothing is deleted).",
                      flag_values=fv)
    flags.mark_flags_as_required(["manifest", "model_dir", "scheme"], flag_values=fv)


def _ints(values: list[str], name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of integers, got "
                             f"{','.join(values)}") from None


def config_from_flags(fv: flags.FlagValues = FLAGS) -> TrainConfig:
    """The :class:`TrainConfig` described by parsed flags.

    Raises:
        ConfigurationError: on invalid combinations (e.g. a patch size not divisible by 8).
        app.UsageError: on malformed lists.
    """
    patch = _ints(fv.patch_size, "patch_size")
    if len(patch) == 1:
        patch = patch * 3
    return TrainConfig(
        manifest=str(Path(fv.manifest).expanduser().resolve()),
        scheme=fv.scheme,
        modalities=tuple(fv.modalities),
        order=tuple(fv.order) if fv.order else None,
        fold=fv.fold,
        num_folds=fv.num_folds,
        split_seed=fv.split_seed,
        network=NetworkConfig(
            num_classes=fv.num_classes, filters=_ints(fv.filters, "filters"),
            strides=_ints(fv.strides, "strides"), num_res_units=fv.num_res_units,
            strided_kernel=fv.strided_kernel, upscore_kernel=fv.upscore_kernel,
            upsample_border=fv.upsample_border, width=fv.width,
        ),
        preprocessing=PreprocessingConfig(
            spacing_mm=fv.spacing_mm, crop_to_organs=fv.crop_to_organs,
            crop_margin_mm=fv.crop_margin_mm, ct_clip_min=fv.ct_clip_min,
            normalisation=fv.normalisation, label_preset=fv.label_preset,
            allow_unknown_labels=fv.allow_unknown_labels,
        ),
        cache_dir=str(Path(fv.cache_dir).expanduser().resolve()) if fv.cache_dir else None,
        pipeline=PipelineConfig(
            patch_size=patch, batch_size=fv.batch_size, sampling=fv.sampling,
            num_classes=fv.num_classes, max_centres_per_class=fv.max_centres_per_class,
            jitter=_ints(fv.jitter, "jitter"), patches_per_volume=fv.patches_per_volume,
            shuffle_buffer=fv.shuffle_buffer,
            augmentation=AugmentationConfig(
                noise_sigma=fv.noise_sigma, offset_sigma=fv.offset_sigma,
                flip_axes=_ints(fv.flip_axes, "flip_axes"),
            ),
        ),
        learning_rate=fv.learning_rate,
        loss=fv.loss,
        steps=fv.steps,
        seed=fv.seed,
        validation_interval=fv.validation_interval,
        validation_overlap=fv.validation_overlap,
        validation_batch_size=fv.validation_batch_size,
        checkpoint_interval=fv.checkpoint_interval,
        keep_checkpoints=fv.keep_checkpoints,
        log_interval=fv.log_interval,
        checkpoint_input_pipeline=fv.checkpoint_input_pipeline,
        jit_compile=fv.jit_compile,
        deterministic=fv.deterministic,
        strategy=fv.strategy,
        mixed_precision=fv.mixed_precision,
    )


def _dice_line(dice: Mapping[str, Mapping[str, float]]) -> str:
    parts = []
    for modality, organs in dice.items():
        values = " ".join(f"{organ} {value:.3f}" for organ, value in organs.items())
        parts.append(f"{modality}: {values}")
    return "; ".join(parts)


class ConsoleReporter(TrainingCallback):
    """Prints what the run does: data, model, resume, a Keras progress bar, validation, summary."""

    def __init__(self) -> None:
        self.progbar: Any = None
        self.interactive = sys.stdout.isatty()

    def on_preprocess(self, done: int, total: int, volume: Any) -> None:
        state = "cache" if volume.from_cache else "preprocessed"
        end = "\n" if done == total or not self.interactive else ""
        print(f"\rdata {done}/{total}: {volume.subject_id} ({volume.modality}, {state})",
              end=end, flush=True)

    def on_train_begin(self, info: TrainingInfo) -> None:
        config = info.config
        if info.moved_previous is not None:
            print(f"restart: the previous run was moved to {info.moved_previous}")
        for modality in config.modalities:
            print(f"{modality}: {len(info.train_subjects[modality])} training and "
                  f"{len(info.validation_subjects[modality])} validation volumes")
        held_out = "none (trained on all)" if config.fold < 0 else f"fold {config.fold}"
        print(f"held out: {held_out}; cache: {info.cache_dir}")
        print(f"model: scheme {config.scheme}, modalities {'/'.join(config.modalities)}, "
              f"{info.num_parameters:,} trainable parameters; learning rate "
              f"{config.effective_learning_rate:g}, loss {config.loss}, batch "
              f"{config.pipeline.batch_size} x {'x'.join(map(str, config.pipeline.patch_size))}")
        if info.resumed_from is not None:
            print(f"resuming from step {info.initial_step} (checkpoint {info.resumed_from})")
        if info.initial_step >= config.steps:
            print(f"already trained to step {info.initial_step} of {config.steps}: nothing to do")
            return
        print(f"training steps {info.initial_step + 1}..{config.steps} into {info.model_dir}",
              flush=True)
        names = ["loss", *[f"loss_{m}" for m in config.modalities]]
        self.progbar = keras.utils.Progbar(
            config.steps, stateful_metrics=names, interval=0.05 if self.interactive else 10.0)
        self.progbar.update(info.initial_step)

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if self.progbar is not None:
            self.progbar.update(step, [(k, v) for k, v in logs.items()])

    def on_validation_end(self, step: int, result: ValidationResult) -> None:
        prefix = "\n" if self.interactive else ""
        print(f"{prefix}step {step}: validation Dice {result.mean:.4f} ({_dice_line(result.dice)})",
              flush=True)

    def on_train_end(self, result: TrainResult) -> None:
        print(flush=True)
        if result.interrupted_by is not None:
            return
        minutes = result.elapsed_s / 60.0
        print(f"done: step {result.step} of {result.steps} ({result.step - result.initial_step} "
              f"trained now in {minutes:.1f} min); last checkpoint {result.checkpoint}")
        best = result.best
        if best and best.get("score") is not None and math.isfinite(best["score"]):
            print(f"best validation Dice {best['score']:.4f} at step {best['step']} "
                  f"({result.model_dir / 'best'})")
        elif result.last_validation is None:
            print("no validation (fold -1 or no held-out volumes)")
        print(f"configuration: {result.model_dir / 'config.json'}", flush=True)


@handle_errors
def main(argv: list[str]) -> int:
    """Trains per the flags; returns the exit status."""
    del argv
    config = config_from_flags(FLAGS)
    result = train(config, FLAGS.model_dir, callbacks=[ConsoleReporter()], restart=FLAGS.restart)
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.step}; rerun the same command to resume", flush=True)
        return EXIT_INTERRUPTED.get(result.interrupted_by, 128 + int(result.interrupted_by))
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-train``)."""
    define_flags(FLAGS)
    app.run(main)


if __name__ == "__main__":
    run()

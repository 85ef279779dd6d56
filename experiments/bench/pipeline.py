"""Benchmark of the training input pipeline (dltk_mm.io.pipeline): sustained patches per second.

Builds synthetic abdominal volumes at a realistic 2 mm size (default about 100 x 160 x 160 voxels
(z, y, x), i.e. a 200 x 320 x 320 mm field, larger than the paper's organ crop), runs the paper's
pipeline (class-balanced 64^3 patches, batch 16, Gaussian noise and intensity offset, MR/CT
alternation) and measures the throughput after a warm-up, in wall-clock time and in process CPU
time (robust to other processes sharing the cores).

Usage:
    python -m experiments.bench.pipeline [--steps 100] [--warmup 20] [--flip] [--augment]

``--augment`` switches on every augmentation beyond the paper at once, each with probability
``--augment_probability`` (default 1, the most work): flips on all axes, random gamma, contrast,
brightness, per-organ intensity, scaling and rotation (:func:`full_augmentation`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from dltk_mm.io.augmentation import AugmentationConfig  # noqa: E402
from dltk_mm.io.pipeline import PipelineConfig, interleaved_dataset  # noqa: E402

FLAGS = flags.FLAGS
def define_flags() -> None:
    """Defines the script's flags (only when it runs as a script, so that other scripts
    can import its functions beside their own flags of the same names)."""
    flags.DEFINE_integer("volumes_per_modality", 4, "Synthetic volumes per modality (MR and CT).")
    flags.DEFINE_list("volume_shape", ["100", "160", "160"], "Nominal volume shape z,y,x (voxels).")
    flags.DEFINE_integer("shape_spread", 8, "Each axis of each volume varies by up to +-this.")
    flags.DEFINE_list("patch_size", ["64", "64", "64"], "Patch shape z,y,x.")
    flags.DEFINE_integer("batch_size", 16, "Patches per batch.")
    flags.DEFINE_enum("sampling", "balanced", ["balanced", "uniform"], "Patch sampling.")
    flags.DEFINE_boolean("flip", False, "Also random flips on all three axes (LR with label swap).")
    flags.DEFINE_boolean("augment", False, "Every augmentation on: flips, gamma, contrast, "
                         "brightness, scaling, rotation (see --augment_probability).")
    flags.DEFINE_float("augment_probability", 1.0, "Probability of each augmentation with "
                       "--augment (1: every patch gets every one, the most work).")
    flags.DEFINE_integer("warmup", 20, "Batches consumed before timing.")
    flags.DEFINE_integer("steps", 100, "Batches timed.")
    flags.DEFINE_integer("seed", 0, "Pipeline seed.")
    flags.DEFINE_integer("num_parallel_calls", None, "Map parallelism (default AUTOTUNE).")


def synthetic_volume(shape: tuple[int, int, int], rng: np.random.Generator):
    """An abdomen-like phantom: body ellipse, liver, spleen, two kidneys, noisy intensities."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, s, dtype=np.float32) for s in shape),
                          indexing="ij")
    label = np.zeros(shape, np.uint8)
    image = np.where((y / 0.8) ** 2 + (x / 0.95) ** 2 < 1, 0.0, -2.0).astype(np.float32)

    def ellipsoid(centre, radii):
        return sum(((c - m) / r) ** 2 for c, m, r in zip((z, y, x), centre, radii, strict=True)) < 1

    shift = rng.uniform(-0.05, 0.05, 3)
    organs = (  # (label, centre zyx in [-1, 1], radii); +x = patient left (LPS)
        (1, (0.3, 0.0, -0.35), (0.45, 0.35, 0.35)),  # liver, patient right
        (2, (0.35, 0.25, 0.45), (0.25, 0.15, 0.15)),  # spleen, left
        (3, (-0.2, 0.4, -0.3), (0.2, 0.1, 0.08)),  # right kidney
        (4, (-0.15, 0.4, 0.3), (0.2, 0.1, 0.08)),  # left kidney
    )
    for value, centre, radii in organs:
        mask = ellipsoid(np.asarray(centre) + shift, radii)
        label[mask] = value
        image[mask] = 0.5 * value
    image += rng.normal(0, 0.3, shape).astype(np.float32)
    return image, label


def full_augmentation(probability: float = 1.0) -> AugmentationConfig:
    """Every augmentation on (the paper's noise and offset, flips on all axes, gamma, contrast,
    brightness, per-organ intensity, scaling and rotation), each beyond the paper with
    ``probability``."""
    return AugmentationConfig(
        flip_axes=(0, 1, 2), gamma_probability=probability, contrast_probability=probability,
        brightness_probability=probability, organ_intensity_probability=probability,
        scale_probability=probability,
        rotation_probability=probability)


def measure_pipeline(volume_shape: Sequence[int], patch_size: Sequence[int], batch_size: int,
                     steps: int, warmup: int, volumes_per_modality: int = 4,
                     shape_spread: int = 8, sampling: str = "balanced", flip: bool = False,
                     seed: int = 0, num_parallel_calls: int | None = None,
                     augment: bool = False, augment_probability: float = 1.0) -> dict:
    """Sustained patches/s of the paper's pipeline over synthetic MR and CT volumes.

    Args:
        volume_shape: nominal ``(z, y, x)`` of the volumes; each axis varies by up to
            ``shape_spread``.
        patch_size: patch ``(z, y, x)``.
        batch_size: patches per batch.
        steps: batches timed (after ``warmup`` batches).
        warmup: batches consumed before timing.
        volumes_per_modality: synthetic volumes per modality.
        shape_spread: see ``volume_shape``.
        sampling: ``"balanced"`` (the paper's) or ``"uniform"``.
        flip: also random flips on all three axes.
        seed: pipeline and volume seed.
        num_parallel_calls: map parallelism (None: AUTOTUNE).
        augment: every augmentation on (:func:`full_augmentation`; implies ``flip``).
        augment_probability: probability of each augmentation with ``augment``.

    Returns:
        The figures (patches/s wall, per core, per CPU-second, ...), JSON-serialisable.
    """
    rng = np.random.default_rng(seed)
    nominal = np.array([int(s) for s in volume_shape])
    volumes = {
        modality: [
            synthetic_volume(tuple(int(s) for s in nominal + rng.integers(
                -shape_spread, shape_spread + 1, 3)), rng)
            for _ in range(volumes_per_modality)
        ]
        for modality in ("mr", "ct")
    }
    config = PipelineConfig(
        patch_size=tuple(int(p) for p in patch_size), batch_size=batch_size, sampling=sampling,
        augmentation=(full_augmentation(augment_probability) if augment
                      else AugmentationConfig(flip_axes=(0, 1, 2) if flip else ())), seed=seed,
        num_parallel_calls=num_parallel_calls,
    )
    build_start = time.perf_counter()
    iterator = iter(interleaved_dataset(volumes, ("mr", "ct"), config=config))
    build_s = time.perf_counter() - build_start
    warm_start = time.perf_counter()
    for _ in range(warmup):
        next(iterator)
    warmup_s = time.perf_counter() - warm_start
    load_before = os.getloadavg()[0]
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(steps):
        next(iterator)
    wall_s = time.perf_counter() - wall_start
    cpu_s = time.process_time() - cpu_start
    load_after = os.getloadavg()[0]
    foreground = np.mean([np.mean(next(iterator)[1].numpy() > 0) for _ in range(10)])
    patches = steps * batch_size
    cores = len(os.sched_getaffinity(0))
    return {
        "patches_per_s": patches / wall_s,
        "patches_per_s_per_core": patches / wall_s / cores,
        "patches_per_cpu_s": patches / cpu_s,
        "cores": cores,
        "load_avg_1min_before_after": [load_before, load_after],
        "patches_timed": patches,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "build_s": build_s,
        "warmup_s": warmup_s,
        "foreground_fraction_patches": float(foreground),
        "foreground_fraction_volumes": float(
            np.mean([np.mean(v[1] > 0) for m in volumes.values() for v in m])
        ),
        "volume_shapes_zyx": [v[0].shape for m in volumes.values() for v in m],
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "sampling": config.sampling,
        "flip": flip or augment,
        "augment": augment,
        "augment_probability": augment_probability if augment else 0.0,
        "tensorflow": tf.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
    }


def main(argv: list[str]) -> None:
    del argv
    result = measure_pipeline(
        FLAGS.volume_shape, FLAGS.patch_size, FLAGS.batch_size, FLAGS.steps, FLAGS.warmup,
        volumes_per_modality=FLAGS.volumes_per_modality, shape_spread=FLAGS.shape_spread,
        sampling=FLAGS.sampling, flip=FLAGS.flip, seed=FLAGS.seed,
        num_parallel_calls=FLAGS.num_parallel_calls, augment=FLAGS.augment,
        augment_probability=FLAGS.augment_probability)
    load_before, load_after = result["load_avg_1min_before_after"]
    print(
        f"input pipeline: {result['patches_per_s']:.1f} patches/s on {result['cores']} cores = "
        f"{result['patches_per_s_per_core']:.1f} patches/s/core "
        f"({result['patches_per_cpu_s']:.1f} patches per CPU-second; 1-min load "
        f"{load_before:.2f} -> {load_after:.2f})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark of the training input pipeline (dltk_mm.io.pipeline): sustained patches per second.

Builds synthetic abdominal volumes at a realistic 2 mm size (default about 100 x 160 x 160 voxels
(z, y, x), i.e. a 200 x 320 x 320 mm field, larger than the paper's organ crop), runs the paper's
pipeline (class-balanced 64^3 patches, batch 16, Gaussian noise and intensity offset, MR/CT
alternation) and measures the throughput after a warm-up, in wall-clock time and in process CPU
time (robust to other processes sharing the cores).

Usage:
    python -m experiments.bench.pipeline [--steps 100] [--warmup 20] [--flip]
"""

from __future__ import annotations

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from dltk_mm.io.augmentation import AugmentationConfig  # noqa: E402
from dltk_mm.io.pipeline import PipelineConfig, interleaved_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("volumes_per_modality", 4, "Synthetic volumes per modality (MR and CT).")
flags.DEFINE_list("volume_shape", ["100", "160", "160"], "Nominal volume shape z,y,x (voxels).")
flags.DEFINE_integer("shape_spread", 8, "Each axis of each volume varies by up to +-this.")
flags.DEFINE_list("patch_size", ["64", "64", "64"], "Patch shape z,y,x.")
flags.DEFINE_integer("batch_size", 16, "Patches per batch.")
flags.DEFINE_enum("sampling", "balanced", ["balanced", "uniform"], "Patch sampling.")
flags.DEFINE_boolean("flip", False, "Also random flips on all three axes (LR with label swap).")
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


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    nominal = np.array([int(s) for s in FLAGS.volume_shape])
    volumes = {}
    for modality in ("mr", "ct"):
        volumes[modality] = [
            synthetic_volume(
                tuple(int(s) for s in nominal + rng.integers(-FLAGS.shape_spread,
                                                             FLAGS.shape_spread + 1, 3)),
                rng,
            )
            for _ in range(FLAGS.volumes_per_modality)
        ]
    shapes = [v[0].shape for m in volumes.values() for v in m]
    config = PipelineConfig(
        patch_size=tuple(int(p) for p in FLAGS.patch_size),
        batch_size=FLAGS.batch_size,
        sampling=FLAGS.sampling,
        augmentation=AugmentationConfig(flip_axes=(0, 1, 2) if FLAGS.flip else ()),
        seed=FLAGS.seed,
        num_parallel_calls=FLAGS.num_parallel_calls,
    )
    build_start = time.perf_counter()
    dataset = interleaved_dataset(volumes, ("mr", "ct"), config=config)
    iterator = iter(dataset)
    build_s = time.perf_counter() - build_start
    warm_start = time.perf_counter()
    for _ in range(FLAGS.warmup):
        next(iterator)
    warmup_s = time.perf_counter() - warm_start
    load_before = os.getloadavg()[0]
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(FLAGS.steps):
        next(iterator)
    wall_s = time.perf_counter() - wall_start
    cpu_s = time.process_time() - cpu_start
    load_after = os.getloadavg()[0]
    foreground = np.mean([np.mean(next(iterator)[1].numpy() > 0) for _ in range(10)])
    patches = FLAGS.steps * FLAGS.batch_size
    cores = len(os.sched_getaffinity(0))
    result = {
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
        "volume_shapes_zyx": shapes,
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "sampling": config.sampling,
        "flip": FLAGS.flip,
        "tensorflow": tf.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
    }
    print(
        f"input pipeline: {result['patches_per_s']:.1f} patches/s on {cores} cores = "
        f"{result['patches_per_s_per_core']:.1f} patches/s/core "
        f"({result['patches_per_cpu_s']:.1f} patches per CPU-second; 1-min load "
        f"{load_before:.2f} -> {load_after:.2f})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

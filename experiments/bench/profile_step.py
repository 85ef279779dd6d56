"""Where a routed training step spends its time: TensorFlow op types and ops, by self time.

Builds the same v4 network and random batches as experiments/bench/train_step.py, traces both
modalities' steps, then records ``--steps`` steps with the TensorFlow profiler and prints the
self time per op type and the most expensive single ops (layer names with the MR/CT suffixes
folded). Self times of ops that ran concurrently add up to more than the wall time; the shares
are what to compare. The trace stays in ``--logdir`` for TensorBoard's profile plugin.

Usage:
    python -m experiments.bench.profile_step [--width 0.25] [--patch 64] [--batch 4] [--steps 2]
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from dltk_mm.networks import build_multistream, make_optimizer  # noqa: E402
from dltk_mm.runtime import onednn_enabled  # noqa: E402
from experiments.bench.profiling import op_self_times, self_time_tables  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("width", 0.25, "Network width (1 = the paper's).")
flags.DEFINE_integer("patch", 64, "Patch size (cubic).")
flags.DEFINE_integer("batch", 4, "Batch size.")
flags.DEFINE_integer("steps", 2, "Profiled steps (after one warm-up step per modality).")
flags.DEFINE_integer("top", 15, "How many op types and single ops to print.")
flags.DEFINE_string("scheme", "v4", "Training scheme.")
flags.DEFINE_string("logdir", None, "Where the trace is written (default: a temporary folder).")


def main(argv: list[str]) -> None:
    del argv
    keras.utils.set_random_seed(0)
    model = build_multistream(FLAGS.scheme, width=FLAGS.width)
    model.compile(optimizer=make_optimizer(FLAGS.scheme))
    step = tf.function(model.train_step, reduce_retracing=True)
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch, FLAGS.patch, FLAGS.patch, FLAGS.patch)
    batches = [(tf.constant(rng.normal(size=(*shape, 1)).astype(np.float32)),
                tf.constant(rng.integers(0, 5, size=shape, dtype=np.int32)),
                tf.fill([FLAGS.batch], index)) for index in range(len(model.modalities))]
    for batch in batches:
        float(step(batch)["loss"])
    logdir = FLAGS.logdir or tempfile.mkdtemp(prefix="dltk_mm_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for i in range(FLAGS.steps):
        logs = step(batches[i % len(batches)])
    float(logs["loss"])
    elapsed = time.perf_counter() - start
    tf.profiler.experimental.stop()

    ops = op_self_times(logdir)
    total = sum(t for _, _, t in ops)
    print(f"width {FLAGS.width}, patch {FLAGS.patch}^3, batch {FLAGS.batch}, {FLAGS.steps} steps "
          f"in {elapsed:.2f} s (profiled), oneDNN CPU kernels "
          f"{'on' if onednn_enabled() else 'off'}; op self time {total:.2f} s; trace in {logdir}")
    print(self_time_tables(ops, FLAGS.top))


if __name__ == "__main__":
    app.run(main)

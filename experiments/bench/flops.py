"""Analytic FLOP count of the FCN (docs/paper.md, section 2.4) and the machine's ceiling.

:func:`conv_macs` counts the multiply-accumulates of every convolution of one stream from the
network's build configuration (the arguments of :func:`dltk_mm.networks.build_multistream`) and the
input size, without building the network: stem, the residual units (first conv strided, kernel
twice the stride by default), the upscore reduction and skip convolutions and the head.
:func:`model_conv_macs` counts the same from a built Keras stream (its Conv3D layers' output
shapes), which cross-checks the analytic count. Only convolutions are counted (batch norm,
activations, pooling, the fixed linear upsampling and the softmax are memory-bound and add well
under 1 % of the arithmetic). A training step costs about 3x the forward pass (forward, gradient
w.r.t. the activations, gradient w.r.t. the weights), with 2 FLOPs per MAC.

:func:`matmul_ceiling` measures the machine's dense float32 matrix-multiply rate with a loop of
large ``tf.matmul`` calls: the practical limit that every throughput figure is divided by.

Usage:
    python -m experiments.bench.flops [--width 1.0] [--patch 64] [--ceiling]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dltk_mm.core.residual_unit import strided_kernel_size
from dltk_mm.core.upscore import upscore_kernel_size
from dltk_mm.networks.fcn import normalise_strides

#: forward + backward (activation and weight gradients) ~= 3 forward passes.
TRAIN_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class ConvCost:
    """One convolution: name, output size (z, y, x), kernel, channels, MACs per sample."""

    name: str
    output: tuple[int, int, int]
    kernel: tuple[int, int, int]
    in_channels: int
    out_channels: int

    @property
    def macs(self) -> int:
        return (math.prod(self.output) * math.prod(self.kernel) * self.in_channels
                * self.out_channels)


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)


def conv_macs(build_config: Mapping[str, Any], input_size: Sequence[int]) -> list[ConvCost]:
    """Every convolution of one stream with its MACs per sample, from the build configuration.

    Args:
        build_config: ``MultiStreamModel.build_config`` (or the same keys: filters, strides,
            num_res_units, kernel_size, strided_kernel, upscore_kernel, num_classes, width).
        input_size: spatial input size ``(z, y, x)``.

    Returns:
        One :class:`ConvCost` per convolution, in network order.
    """
    width = float(build_config.get("width", 1.0))
    filters = [max(1, int(round(f * width))) for f in build_config["filters"]]
    strides = normalise_strides(build_config["strides"])
    units = int(build_config.get("num_res_units", 3))
    kernel = _triple(build_config.get("kernel_size", 3))
    classes = int(build_config.get("num_classes", 5))
    strided = build_config.get("strided_kernel", "paper")
    reduce_kernel = upscore_kernel_size(build_config.get("upscore_kernel", "paper"))

    def down(size: Sequence[int], stride: Sequence[int]) -> tuple[int, int, int]:
        return tuple(-(-s // t) for s, t in zip(size, stride, strict=True))

    costs: list[ConvCost] = []
    size = down(input_size, strides[0])
    costs.append(ConvCost("stem_conv", size, kernel, 1, filters[0]))
    sizes = [size]
    channels = filters[0]
    for scale in range(1, len(filters)):
        for unit in range(units):
            unit_strides = strides[scale] if unit == 0 else (1, 1, 1)
            size = down(size, unit_strides)
            first = strided_kernel_size(kernel, unit_strides, strided)
            name = f"enc{scale}_unit{unit}"
            costs.append(ConvCost(f"{name}_conv0", size, first, channels, filters[scale]))
            costs.append(ConvCost(f"{name}_conv1", size, kernel, filters[scale], filters[scale]))
            if channels > filters[scale]:
                costs.append(ConvCost(f"{name}_shortcut_conv", size, (1, 1, 1), channels,
                                      filters[scale]))
            channels = filters[scale]
        sizes.append(size)
    for scale in range(len(filters) - 2, -1, -1):
        if channels != classes:  # as dltk_mm.core.upscore.upscore_unit
            costs.append(ConvCost(f"dec{scale}_reduce_conv", sizes[scale + 1], reduce_kernel,
                                  channels, classes))
            channels = classes
        costs.append(ConvCost(f"dec{scale}_skip_conv", sizes[scale], (1, 1, 1), filters[scale],
                              classes))
    costs.append(ConvCost("head_conv", sizes[0], (1, 1, 1), classes, classes))
    return costs


def model_conv_macs(stream: keras.Model) -> int:
    """MACs per sample of the Conv3D layers of a built stream with a fixed input shape."""
    total = 0
    for layer in stream.layers:
        if isinstance(layer, keras.layers.Conv3D):
            kernel = layer.kernel.shape  # (kz, ky, kx, in, out)
            total += int(np.prod(layer.output.shape[1:4])) * int(np.prod(kernel))
    return total


def train_flops_per_sample(build_config: Mapping[str, Any], input_size: Sequence[int]) -> float:
    """FLOPs of one training step per sample: 2 FLOPs/MAC x 3 (forward + backward)."""
    return 2.0 * TRAIN_FACTOR * sum(c.macs for c in conv_macs(build_config, input_size))


def forward_flops_per_sample(build_config: Mapping[str, Any], input_size: Sequence[int]) -> float:
    """FLOPs of one forward pass per sample (2 FLOPs per MAC)."""
    return 2.0 * sum(c.macs for c in conv_macs(build_config, input_size))


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """The measured float32 matmul rate (medians over timed calls).

    Attributes:
        gflops: GFLOP/s of wall-clock time (what the process got from the shared machine).
        gflops_per_cpu_second: GFLOP per second of process CPU time, summed over its threads (the
            per-core rate, nearly independent of other processes sharing the cores).
        cpu_utilisation: process CPU seconds per wall second during the measurement.
        gflops_min: the slowest call's wall rate (with ``gflops_max``, the spread of the machine).
        gflops_max: the fastest call's wall rate.
    """

    gflops: float
    gflops_per_cpu_second: float
    cpu_utilisation: float
    gflops_min: float = float("nan")
    gflops_max: float = float("nan")


def matmul_ceiling(size: int = 2048, calls: int = 7, dtype: str = "float32") -> Ceiling:
    """The rate of chains of ``size x size`` matrix products on the default device.

    Each ``tf.function`` call runs a chain of 8 products (no host round trip inside, ~137 GFLOP
    at the default size); after a warm-up call, ``calls`` calls are timed one by one and the
    medians of their wall and CPU rates are reported. Medians, because the rate of a shared
    virtual machine varies from call to call (on the 2-core machine of experiments/bench/README.md
    by about +-10 %).
    """
    a = tf.random.stateless_normal((size, size), seed=(1, 2), dtype=dtype) / math.sqrt(size)
    b = tf.random.stateless_normal((size, size), seed=(3, 4), dtype=dtype) / math.sqrt(size)
    chain = 8

    @tf.function
    def run(x: tf.Tensor) -> tf.Tensor:
        for _ in range(chain):
            x = tf.matmul(x, b)
        return x

    run(a).numpy()
    flops = 2.0 * size**3 * chain
    wall_rates, cpu_rates, utilisation = [], [], []
    for _ in range(calls):
        cpu_start = time.process_time()
        start = time.perf_counter()
        run(a).numpy()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        wall_rates.append(flops / elapsed / 1e9)
        cpu_rates.append(flops / cpu / 1e9)
        utilisation.append(cpu / elapsed)
    return Ceiling(gflops=float(np.median(wall_rates)),
                   gflops_per_cpu_second=float(np.median(cpu_rates)),
                   cpu_utilisation=float(np.median(utilisation)),
                   gflops_min=min(wall_rates), gflops_max=max(wall_rates))


def main() -> None:
    import argparse

    from dltk_mm.networks import build_multistream

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--ceiling", action="store_true", help="also measure the matmul ceiling")
    args = parser.parse_args()
    model = build_multistream("individual", modalities=("mr",), width=args.width,
                              input_shape=(args.patch,) * 3)
    costs = conv_macs(model.build_config, (args.patch,) * 3)
    for cost in costs:
        print(f"{cost.name:28s} {str(cost.output):16s} k{cost.kernel} {cost.in_channels:4d}->"
              f"{cost.out_channels:4d}  {cost.macs / 1e9:8.3f} GMAC")
    analytic = sum(c.macs for c in costs)
    print(f"total {analytic / 1e9:.3f} GMAC per sample (model layers: "
          f"{model_conv_macs(model.streams['mr']) / 1e9:.3f}); training step "
          f"{train_flops_per_sample(model.build_config, (args.patch,) * 3) / 1e9:.1f} GFLOP per "
          "sample")
    if args.ceiling:
        ceiling = matmul_ceiling()
        print(f"matmul ceiling: {ceiling.gflops:.1f} GFLOP/s wall, "
              f"{ceiling.gflops_per_cpu_second:.1f} GFLOP per CPU-second")


if __name__ == "__main__":
    main()

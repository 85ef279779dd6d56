"""The PyTorch peer of the DLTK FCN: the same network, training step and sliding window in torch.

Runs only in the benchmark environment (experiments/bench/README.md, "PyTorch and MONAI peers": a
virtual environment with PyTorch and MONAI; neither is a dltk_mm dependency). It imports torch (and
MONAI for prediction) but never TensorFlow, so that a prediction's peak resident memory is
PyTorch's own. The parent scripts, experiments/bench/train_step.py and experiments/bench/predict.py
with ``--peer``, run it as a child process:

    python -m experiments.bench.torch_fcn train --layout JSON --patch 64 --batch 2 --steps 3
    python -m experiments.bench.torch_fcn predict --layout JSON --size 128x256x256 --overlap 0

:class:`TorchFCN` is built from a layout (:func:`experiments.bench.peer.fcn_layout`): every
convolution of dltk_mm's stream by its Keras layer name, with kernel and channels, from the same
analytic description that the FLOP count uses (experiments/bench/flops.py: ``conv_macs``), plus
the strides, residual units per scale and the batch-norm and leaky-ReLU settings. It is the FCN of
docs/paper.md, section 2.4: a 3^3 stem, per scale pre-activation residual units (BN, leaky ReLU,
conv, BN, leaky ReLU, conv; the first unit strided, kernel 4^3 for stride 2; shortcut max-pooled,
zero-padded on the channel axis or projected by a 1^3 convolution), upscore units (1^3 reduction
to the classes, fixed trilinear upsampling with replicated borders, 1^3 skip convolution + BN,
sum) and a 1^3 head; convolutions without bias with LeCun-uniform weights and TensorFlow's 'same'
padding, batch norm with Keras' momentum 0.99 (PyTorch's 0.01) and epsilon 1e-3. Tensors use
``torch.channels_last_3d``, the memory layout of oneDNN's fast CPU kernels (and of dltk_mm's
channels-last tensors).

Threads: all usable cores (as TensorFlow), with ``OMP_WAIT_POLICY=PASSIVE`` unless the caller set
it: with the OpenMP default (threads spin at every barrier) a 2-core machine shared with another
busy process made the PyTorch forward pass of a small FCN 100x slower (1.2-2.2 s instead of 0.01 s
per call at a load average of 6), while TensorFlow's thread pool was not affected; the policy is
recorded with every figure (``omp_wait_policy``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from collections.abc import Mapping, Sequence
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

MEMORY_FORMAT = torch.channels_last_3d


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _same_padding(kernel: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """TensorFlow's 'same' padding (before, after) per axis for sizes divisible by the strides:
    ``k - s`` zeros in all, the smaller half before."""
    pads = []
    for k, s in zip(kernel, strides, strict=True):
        total = max(int(k) - int(s), 0)
        pads.append((total // 2, total - total // 2))
    return pads


class SameConv3d(nn.Module):
    """A bias-free 3-D convolution with TensorFlow's 'same' padding and LeCun-uniform weights.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel: kernel size per axis (z, y, x).
        strides: strides per axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int],
                 strides: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        pads = _same_padding(kernel, strides)
        symmetric = all(before == after for before, after in pads)
        self.pad = None if symmetric else tuple(p for pair in reversed(pads) for p in pair)
        self.conv = nn.Conv3d(in_channels, out_channels, tuple(kernel), stride=tuple(strides),
                              padding=tuple(b for b, _ in pads) if symmetric else 0, bias=False)
        bound = math.sqrt(3.0 / (in_channels * math.prod(kernel)))  # LeCun uniform, as Keras'
        nn.init.uniform_(self.conv.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.conv(x if self.pad is None else F.pad(x, self.pad))


class TorchFCN(nn.Module):
    """dltk_mm's FCN stream in PyTorch, built from a layout (see the module docstring).

    Every weighted layer is in :attr:`layers` under its dltk_mm (Keras) layer name without the
    modality suffix (``stem_conv``, ``enc1_unit0_bn0``, ``enc1_unit0_conv0``, ``dec3_reduce``,
    ``dec3_skip_conv``, ``dec3_skip_bn``, ``head_conv``, ...), so that weights can be copied
    between the two. ``forward`` maps ``(b, 1, z, y, x)`` images to ``(b, C, z, y, x)`` logits.

    Args:
        layout: ``experiments.bench.peer.fcn_layout`` of the dltk_mm network.

    Raises:
        ValueError: for an upsampling border other than the paper's ``"replicate"``.
    """

    def __init__(self, layout: Mapping[str, Any]) -> None:
        super().__init__()
        if layout["upsample_border"] != "replicate":
            raise ValueError("the PyTorch peer implements the paper's replicated upsampling "
                             f"border only, got {layout['upsample_border']!r}")
        convs = layout["convs"]
        self.strides = [tuple(s) for s in layout["strides"]]
        self.num_res_units = int(layout["num_res_units"])
        self.alpha = float(layout["leaky_relu_alpha"])
        momentum = 1.0 - float(layout["batch_norm_momentum"])  # Keras' decay -> torch's update
        epsilon = float(layout["batch_norm_epsilon"])
        layers: dict[str, nn.Module] = {}

        def conv(name: str, strides: Sequence[int] = (1, 1, 1)) -> dict:
            spec = convs[name]
            layers[name.removesuffix("_conv") if name.endswith("_reduce_conv") else name] = (
                SameConv3d(spec["in"], spec["out"], spec["kernel"], strides))
            return spec

        def batch_norm(name: str, channels: int) -> None:
            layers[name] = nn.BatchNorm3d(channels, eps=epsilon, momentum=momentum)

        conv("stem_conv", self.strides[0])
        #: per residual unit: (name, strides, channel zero padding (before, after) or None)
        self.units: list[list[tuple[str, tuple[int, ...], tuple[int, int] | None]]] = []
        for scale in range(1, len(self.strides)):
            units = []
            for unit in range(self.num_res_units):
                name = f"enc{scale}_unit{unit}"
                strides = self.strides[scale] if unit == 0 else (1, 1, 1)
                spec = conv(f"{name}_conv0", strides)
                batch_norm(f"{name}_bn0", spec["in"])
                batch_norm(f"{name}_bn1", spec["out"])
                conv(f"{name}_conv1")
                grow = spec["out"] - spec["in"]
                if grow < 0:
                    conv(f"{name}_shortcut_conv")
                units.append((name, strides, (grow // 2, grow - grow // 2) if grow > 0 else None))
            self.units.append(units)
        self.decoder: list[tuple[str, tuple[int, ...]]] = []
        for scale in range(len(self.strides) - 2, -1, -1):
            name = f"dec{scale}"
            if f"{name}_reduce_conv" in convs:
                conv(f"{name}_reduce_conv")
            spec = conv(f"{name}_skip_conv")
            batch_norm(f"{name}_skip_bn", spec["out"])
            self.decoder.append((name, self.strides[scale + 1]))
        conv("head_conv")
        self.layers = nn.ModuleDict(layers)

    def _residual_unit(self, x: torch.Tensor, name: str, strides: tuple[int, ...],
                       grow: tuple[int, int] | None) -> torch.Tensor:
        layers = self.layers
        y = layers[f"{name}_conv0"](F.leaky_relu(layers[f"{name}_bn0"](x), self.alpha))
        y = layers[f"{name}_conv1"](F.leaky_relu(layers[f"{name}_bn1"](y), self.alpha))
        shortcut = x
        if any(s > 1 for s in strides):
            shortcut = F.max_pool3d(shortcut, strides, strides, ceil_mode=True)
        if grow is not None:  # zero channels before and after, as dltk_mm's ChannelZeroPadding
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, 0, *grow))
        elif f"{name}_shortcut_conv" in layers:
            shortcut = layers[f"{name}_shortcut_conv"](shortcut)
        return y + shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        layers = self.layers
        x = layers["stem_conv"](x)
        skips = [x]
        for units in self.units:
            for name, strides, grow in units:
                x = self._residual_unit(x, name, strides, grow)
            skips.append(x)
        for (name, strides), skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            if f"{name}_reduce" in layers:
                x = layers[f"{name}_reduce"](x)
            if any(s > 1 for s in strides):  # half-pixel trilinear, edges replicated
                x = F.interpolate(x, scale_factor=strides, mode="trilinear", align_corners=False)
            x = x + layers[f"{name}_skip_bn"](layers[f"{name}_skip_conv"](skip))
        return layers["head_conv"](x)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """dltk_mm's soft Dice loss (dltk_mm/core/losses.py: ``dice_loss``, smooth 0) in PyTorch.

    1 - the mean over samples and classes (background included) of
    ``2 sum(p g) / (sum(p) + sum(g))`` with ``p = softmax(logits)``, ``g = one_hot(labels)``
    summed over the voxels; 1 where the denominator is 0 (docs/paper.md, section 4.3).

    Args:
        logits: ``(b, C, z, y, x)``.
        labels: integer ``(b, z, y, x)``.
    """
    probabilities = torch.softmax(logits, dim=1)
    truth = F.one_hot(labels.long(), logits.shape[1]).permute(0, 4, 1, 2, 3).to(logits.dtype)
    axes = (2, 3, 4)
    numerator = 2.0 * (probabilities * truth).sum(axes)
    denominator = probabilities.sum(axes) + truth.sum(axes)
    empty = denominator == 0
    dice = torch.where(empty, torch.ones_like(numerator),
                       numerator / torch.where(empty, torch.ones_like(denominator), denominator))
    return 1.0 - dice.mean()


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _setup(threads: int | None) -> dict[str, Any]:
    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return {"framework": "pytorch", "torch": torch.__version__, "threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "device": str(_device()), "memory_format": "channels_last_3d",
            "mkldnn": bool(torch.backends.mkldnn.is_available())}


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (batch-norm scales and offsets included, running statistics not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure_train_step(layout: Mapping[str, Any], patch: int, batch: int, steps: int,
                       learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999,
                       epsilon: float = 1e-5, threads: int | None = None) -> dict[str, Any]:
    """Times ``steps`` training steps of :class:`TorchFCN` as dltk_mm's benchmark times its own.

    Adam with dltk_mm's settings (``make_optimizer``: learning rate of the scheme, betas 0.9 and
    0.999, epsilon 1e-5) and the soft Dice loss; two batches of random data (the same NumPy draws
    as experiments/bench/train_step.py: ``measure``) placed on the device once; one warm-up step
    per batch, then ``steps`` steps alternating the two batches, one device->host read at the end.

    Returns:
        Seconds per step, patches/s, warm-up seconds, CPU utilisation, parameters and the setup.
    """
    info = _setup(threads)
    device = _device()
    model = TorchFCN(layout).to(device=device, memory_format=MEMORY_FORMAT)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(beta_1, beta_2),
                                 eps=epsilon)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        image = rng.normal(size=(batch, patch, patch, patch, 1)).astype(np.float32)
        label = rng.integers(0, 5, size=(batch, patch, patch, patch), dtype=np.int32)
        batches.append((
            torch.from_numpy(image).permute(0, 4, 1, 2, 3).to(device, memory_format=MEMORY_FORMAT),
            torch.from_numpy(label).long().to(device)))

    def step(data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = soft_dice_loss(model(data[0]), data[1])
        loss.backward()
        optimizer.step()
        return loss.detach()

    start = time.perf_counter()
    for data in batches:
        float(step(data))
    warmup = time.perf_counter() - start
    cpu_start = time.process_time()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % len(batches)])
    float(loss)  # one device->host read at the end
    _synchronise(device)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return info | {
        "patch": patch, "batch": batch, "steps": steps, "warmup_s": round(warmup, 1),
        "s_per_step": round(elapsed / steps, 3), "patches_per_s": round(steps * batch / elapsed, 3),
        "cpu_utilisation": round(cpu / elapsed, 2), "parameters": parameter_count(model),
        "loss": round(float(loss), 4)}


def measure_prediction(layout: Mapping[str, Any], size: Sequence[int], patch: int = 64,
                       overlap: float = 0.0, weighting: str = "uniform", batch_size: int = 4,
                       threads: int | None = None) -> dict[str, Any]:
    """Segments a synthetic volume with MONAI's ``sliding_window_inference`` and the torch FCN.

    As experiments/bench/predict.py: ``measure_volume`` does with dltk_mm: an untrained network
    (eval mode: batch norm with its running statistics; no gradients), traced by one warm-up
    batch; the same random volume (NumPy, seed 0); windows of ``patch``^3 (MONAI's ``roi_size``)
    with ``overlap``, ``batch_size`` windows per call (``sw_batch_size``), softmax probabilities
    blended with MONAI's ``constant`` (dltk_mm's ``uniform``) or ``gaussian`` (sigma = patch / 8
    in both) weighting, then the argmax. Run it in a fresh process: the peak RSS is the
    process's.

    Returns:
        Seconds, windows, voxels/s, peak RSS (and RSS after the warm-up) and the setup.
    """
    from monai import __version__ as monai_version
    from monai.inferers import sliding_window_inference

    modes = {"uniform": "constant", "gaussian": "gaussian"}
    if weighting not in modes:
        raise ValueError(f"weighting must be one of {sorted(modes)}, got {weighting!r}")
    info = _setup(threads) | {"monai": monai_version, "mode": modes[weighting]}
    device = _device()
    model = TorchFCN(layout).to(device=device, memory_format=MEMORY_FORMAT).eval()
    windows = {"count": 0}

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        windows["count"] += batch.shape[0]
        logits = model(batch.contiguous(memory_format=MEMORY_FORMAT))
        return torch.softmax(logits, dim=1)

    with torch.no_grad():
        predictor(torch.zeros((batch_size, 1, patch, patch, patch), device=device))
        windows["count"] = 0
        rss_before = _peak_rss_mb()
        volume = np.random.default_rng(0).normal(size=tuple(size)).astype(np.float32)
        load = os.getloadavg()[0]
        cpu_start = time.process_time()
        start = time.perf_counter()
        probabilities = sliding_window_inference(
            torch.from_numpy(volume)[None, None].to(device), roi_size=(patch,) * 3,
            sw_batch_size=batch_size, predictor=predictor, overlap=overlap, mode=modes[weighting],
            sigma_scale=0.125, padding_mode="constant", cval=0.0)
        labels = torch.argmax(probabilities, dim=1)[0].to(torch.uint8).cpu().numpy()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    assert labels.shape == tuple(size)
    voxels = int(np.prod(size))
    return info | {
        "size": "x".join(map(str, size)), "voxels": voxels, "windows": windows["count"],
        "overlap": overlap, "weighting": weighting, "batch_size": batch_size,
        "seconds": round(elapsed, 2), "mvoxels_per_s": round(voxels / elapsed / 1e6, 3),
        "s_per_window": round(elapsed / windows["count"], 4),
        "cpu_utilisation": round(cpu / elapsed, 2), "peak_rss_mb": round(_peak_rss_mb(), 0),
        "rss_after_warmup_mb": round(rss_before, 0), "parameters": parameter_count(model),
        "load_average": round((load + os.getloadavg()[0]) / 2, 2)}


def main(argv: Sequence[str] | None = None) -> None:
    """The child process of the ``--peer`` benchmarks: prints ``RESULT {json}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("train", "predict"))
    parser.add_argument("--layout", required=True, help="experiments.bench.peer.fcn_layout JSON")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="patches per step / windows per call")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--beta_1", type=float, default=0.9)
    parser.add_argument("--beta_2", type=float, default=0.999)
    parser.add_argument("--epsilon", type=float, default=1e-5)
    parser.add_argument("--size", default="128x256x256", help="volume z x y x x")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--weighting", default="uniform", choices=("uniform", "gaussian"))
    args = parser.parse_args(argv)
    layout = json.loads(args.layout)
    if args.task == "train":
        result = measure_train_step(layout, args.patch, args.batch, args.steps,
                                    args.learning_rate, args.beta_1, args.beta_2, args.epsilon)
    else:
        size = tuple(int(s) for s in args.size.split("x"))
        result = measure_prediction(layout, size, args.patch, args.overlap, args.weighting,
                                    args.batch)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

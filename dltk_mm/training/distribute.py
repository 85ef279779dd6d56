"""Distributed training: strategies from a name and TF_CONFIG, the routed step under a strategy.

Valindria et al. (WACV 2018) train on one GPU; this module scales the same optimisation
(docs/paper.md, sections 3.2 and 4.4: one modality per batch, each batch's loss back-propagated
through its own stream only) to several devices (``tf.distribute.MirroredStrategy``) and several
machines (``tf.distribute.MultiWorkerMirroredStrategy``, cluster from the ``TF_CONFIG``
environment variable). How the pieces fit:

* **Routing.** On one device :meth:`MultiStreamModel.train_step` routes with ``tf.switch_case``
  on the batch's modality index and applies the optimizer inside the branch. Under a
  ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy`` the optimizer's gradient all-reduce and
  variable update are ``merge_call`` synchronisation points, and TensorFlow refuses a
  ``merge_call`` inside a control-flow branch of the replica function ("`merge_call` called while
  defining a new graph or a tf.function", tensorflow#59487, keras#17429, keras#18666). So
  :class:`DistributedRoutedStep` compiles ONE step function per modality (a
  ``tf.function`` around ``strategy.run``, no branch around the update) and picks it on the host
  from the input's fixed modality cycle (step ``k`` is ``order[k % len(order)]``, the same on
  every worker, so the collectives of all workers match). No value is read back from the device
  to choose; the compiled step asserts that every replica's batch carries that modality index.
* **Batches.** The global batch (``PipelineConfig.batch_size``) is split across replicas: every
  replica gets ``global / num_replicas`` patches of the step's modality. The loss of each replica
  is weighted by ``local batch / global batch``; Keras' optimizer sums the gradients over replicas,
  which then equal the gradients of the global batch mean. The reported loss is the cross-replica
  sum of the weighted losses (= the global mean), added to the model's loss trackers in
  cross-replica context.
* **Batch norm.** Keras 3 creates moving statistics with aggregation NONE, so under a strategy
  every replica would keep its own statistics (the replicas' copies drift apart). After each step
  the replica function replaces the stream's moving statistics by their cross-replica mean
  (equivalent to updating with the mean of the replicas' batch statistics), so all copies stay
  identical. Batch statistics used in the forward pass are per replica (Keras' default,
  unsynchronised batch norm).
* **Input.** :func:`distributed_interleaved_dataset` builds one pipeline per worker with
  ``strategy.distribute_datasets_from_function``: per-replica batches, a per-worker seed
  (``derive(seed, input_pipeline_id)``), and every entry of the modality cycle repeated once per
  local replica (the local replicas take consecutive elements), so each replica of a step gets
  different patches of the same modality. Sharding is explicitly OFF
  (``tf.data.experimental.AutoShardPolicy.OFF``): the stream is generated from in-memory volumes
  and infinite, so FILE sharding is impossible and DATA sharding would make every worker compute
  every batch to keep 1/N of it; distinct seeds give each worker an independent random stream.
  The volumes are captured by the pipeline as eager constants; each worker builds its own copy.
* **Checkpoints.** Every worker takes part in saving (as TensorFlow requires for multi-worker
  checkpoints), but only the chief writes to the model folder; the other workers write to a
  private temporary folder that is deleted afterwards (:func:`worker_checkpoint_dir`). Every
  worker resumes from the chief's newest checkpoint (the model folder must be on a file system
  all workers see). The tf.data iterator position is not checkpointed under a strategy: a resumed
  run reseeds the pipeline and continues the modality cycle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf
from absl import logging

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.pipeline import PipelineConfig, VolumePair, interleaved_dataset
from dltk_mm.io.seeds import derive_seed

#: Strategy names accepted by :func:`create_strategy` (and ``dltk-mm-train --strategy``).
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Where this process stands in a (possibly multi-worker) run.

    Attributes:
        task_type: ``"worker"`` / ``"chief"`` from TF_CONFIG, or None for a single process.
        task_id: index of the task within its type (0 for a single process).
        num_workers: worker processes taking part (1 for a single process).
        is_chief: whether this process writes the model folder (checkpoints, logs, best model).
    """

    task_type: str | None
    task_id: int
    num_workers: int
    is_chief: bool


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` environment variable, or None if unset or empty.

    Raises:
        ConfigurationError: when it is not valid JSON with ``cluster`` and ``task`` entries.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ConfigurationError(
            f"TF_CONFIG is not valid JSON ({error}); expected e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from error
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ConfigurationError(
            "TF_CONFIG must hold 'cluster' (task type -> list of host:port) and 'task' "
            "({'type': 'worker', 'index': i}); see docs/distributed.md"
        )
    return config


def create_strategy(
    name: str = "default",
    devices: Sequence[str] | None = None,
    communication: str = "auto",
) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy from its name.

    Args:
        name: ``"default"`` (no distribution: one device, the routed ``switch_case`` step),
            ``"mirrored"`` (``MirroredStrategy``: synchronous data parallelism over the local
            GPUs, or ``devices``), ``"multi_worker"`` (``MultiWorkerMirroredStrategy``: the same
            over several processes/machines; the cluster comes from ``TF_CONFIG``, see
            docs/distributed.md).
        devices: MirroredStrategy only: devices to use (default: all local GPUs; without GPUs,
            every logical CPU device, see ``tf.config.set_logical_device_configuration``).
        communication: MultiWorker only: ``"auto"``, ``"ring"`` or ``"nccl"`` collectives.

    Returns:
        The strategy. Create it before any other TensorFlow operation of the process (multi-worker
        strategies start the collective runtime).

    Raises:
        ConfigurationError: unknown name, or ``multi_worker`` with a malformed TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise ConfigurationError(f"unknown strategy {name!r}; use one of {list(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if not devices and not tf.config.list_physical_devices("GPU"):
            # No GPU: the logical CPU devices (several if the process configured them).
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
        logging.info("MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return strategy
    tf_config = read_tf_config()
    if tf_config is None:
        logging.warning("strategy multi_worker without TF_CONFIG: a single local worker")
    implementations = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }
    if communication not in implementations:
        raise ConfigurationError(
            f"communication must be one of {sorted(implementations)}, got {communication!r}"
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementations[communication]
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    logging.info("MultiWorkerMirroredStrategy: %d replicas in sync", strategy.num_replicas_in_sync)
    return strategy


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a real distribution strategy (not TensorFlow's default one)."""
    return "Default" not in type(strategy).__name__


def worker_info(strategy: tf.distribute.Strategy) -> WorkerInfo:
    """Task type, index, worker count and chief flag of this process under ``strategy``.

    The chief is the ``chief`` task if the cluster has one, else worker 0 (TensorFlow's
    convention); a single process is its own chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if task_type is None:
        return WorkerInfo(task_type=None, task_id=0, num_workers=1, is_chief=True)
    task_id = int(resolver.task_id or 0)
    spec = resolver.cluster_spec().as_dict()
    num_workers = sum(len(spec.get(kind, ())) for kind in ("chief", "worker"))
    has_chief = "chief" in spec
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return WorkerInfo(task_type=task_type, task_id=task_id, num_workers=max(1, num_workers),
                      is_chief=is_chief)


def worker_checkpoint_dir(model_dir: str | os.PathLike, info: WorkerInfo) -> Path:
    """Where this worker writes checkpoints: the model folder for the chief, else a new private
    temporary folder (delete it with :func:`remove_worker_dir` after each save)."""
    if info.is_chief:
        return Path(model_dir)
    return Path(tempfile.mkdtemp(prefix=f"dltk_mm_worker{info.task_id}_"))


def remove_worker_dir(path: str | os.PathLike, info: WorkerInfo) -> None:
    """Deletes a non-chief worker's temporary checkpoint folder (never the chief's model folder)."""
    if not info.is_chief:
        shutil.rmtree(path, ignore_errors=True)


def check_global_batch(global_batch_size: int, replicas: int) -> int:
    """The per-replica batch size; the global batch must split evenly over the replicas.

    Args:
        global_batch_size: patches per step over all replicas.
        replicas: ``strategy.num_replicas_in_sync``.

    Raises:
        ConfigurationError: when it does not.
    """
    if global_batch_size % replicas:
        raise ConfigurationError(
            f"the batch size {global_batch_size} (the global batch) must be divisible by the "
            f"{replicas} replicas of the strategy; use e.g. --batch_size "
            f"{max(replicas, global_batch_size - global_batch_size % replicas)}"
        )
    return global_batch_size // replicas


def distributed_interleaved_dataset(
    strategy: tf.distribute.Strategy,
    volumes_by_modality: Mapping[str, Sequence[VolumePair]],
    modalities: Sequence[str],
    order: Sequence[str],
    config: PipelineConfig,
) -> tf.distribute.DistributedDataset:
    """The interleaved patch pipeline, split over the replicas of ``strategy``.

    ``config.batch_size`` is the GLOBAL batch. Each worker builds its own pipeline (per-replica
    batches, its own seed derived from ``config.seed`` and the worker's input-pipeline id, the
    modality cycle with each entry repeated once per local replica), so that step ``k`` gives every
    replica of every worker a batch of modality ``order[k % len(order)]``. Auto-sharding is OFF
    (see the module docstring).

    Args:
        strategy: the distribution strategy.
        volumes_by_modality: ``{modality: [(image, label), ...]}`` training volumes.
        modalities: the model's ordered modalities.
        order: the modality cycle.
        config: pipeline settings with the global batch size.

    Returns:
        A distributed dataset whose elements are per-replica ``(image, label, modality_index)``.

    Raises:
        ConfigurationError: when the global batch does not split evenly.
    """
    per_replica = check_global_batch(config.batch_size, strategy.num_replicas_in_sync)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        seed = None if config.seed is None else derive_seed(config.seed, context.input_pipeline_id)
        worker_order = tuple(m for m in order for _ in range(local_replicas))
        worker_config = dataclasses.replace(config, batch_size=per_replica, seed=seed)
        dataset = interleaved_dataset(volumes_by_modality, modalities, worker_order,
                                      worker_config)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


class DistributedRoutedStep:
    """The routed training step of a :class:`~dltk_mm.networks.MultiStreamModel` under a strategy.

    One compiled function per modality of ``order`` (see the module docstring for why); calling
    the object runs the next step of the modality cycle. Build the model, compile it, and create
    this object inside ``strategy.scope()``.

    Args:
        model: the compiled multi-stream model (created under ``strategy.scope()``).
        strategy: the strategy.
        order: the modality cycle of the input (the same as the dataset's).
        global_batch_size: patches per step over all replicas.
        jit_compile: XLA-compile each replica's forward and backward pass (the cross-replica
            all-reduce and the update stay outside XLA: they are synchronisation points).
        sync_batch_norm_statistics: replace the moving statistics by their cross-replica mean
            after every step (keeps all replicas identical; see the module docstring).
    """

    def __init__(
        self,
        model: Any,
        strategy: tf.distribute.Strategy,
        order: Sequence[str],
        global_batch_size: int,
        jit_compile: bool = False,
        sync_batch_norm_statistics: bool = True,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.order = tuple(order)
        if not self.order:
            raise ConfigurationError("order must name at least one modality")
        check_global_batch(global_batch_size, strategy.num_replicas_in_sync)
        self.global_batch_size = int(global_batch_size)
        self.jit_compile = bool(jit_compile)
        self.sync_batch_norm_statistics = sync_batch_norm_statistics
        self.position = 0
        self._functions: dict[str, Callable[[Any], dict[str, tf.Tensor]]] = {}
        for modality in dict.fromkeys(self.order):
            self._functions[modality] = self._make_step(model.modality_index(modality))

    def _make_step(self, index: int) -> Callable[[Any], dict[str, tf.Tensor]]:
        model = self.model
        strategy = self.strategy
        stream = model.streams[model.modalities[index]]
        statistics = [v for v in stream.non_trainable_variables
                      if tf.as_dtype(v.dtype).is_floating]
        global_batch = float(self.global_batch_size)

        variables = stream.trainable_variables

        def compute(image: tf.Tensor, label: tf.Tensor, weight: tf.Tensor) -> Any:
            loss, gradients, _ = model.stream_gradients(index, image, label, weight)
            return loss, gradients

        gradients_fn = (tf.function(compute, jit_compile=True, reduce_retracing=True)
                        if self.jit_compile else compute)

        def replica_step(image: tf.Tensor, label: tf.Tensor, modality: tf.Tensor) -> tf.Tensor:
            image = model._check_image(image)
            tf.debugging.assert_equal(
                tf.cast(modality, tf.int32), index,
                message=(f"routed step of {model.modalities[index]!r} received a batch of another "
                         "modality: the input's modality cycle and the step's are out of line"),
            )
            weight = tf.cast(tf.shape(image)[0], tf.float32) / global_batch
            loss, gradients = gradients_fn(image, label, weight)
            model.optimizer.apply(gradients, variables)
            if self.sync_batch_norm_statistics and statistics:
                context = tf.distribute.get_replica_context()
                # Tensors (the local values), not the variables: a variable passed to all_reduce
                # becomes the reduction's destination, which MultiWorkerMirroredStrategy rejects.
                means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                           [tf.identity(v.value) for v in statistics])
                for variable, mean in zip(statistics, means, strict=True):
                    variable.assign(mean)
            return loss

        trackers = (model._loss_tracker_total, model._modality_loss_trackers[index])

        @tf.function(reduce_retracing=True)
        def step(batch: Any) -> dict[str, tf.Tensor]:
            image, label, modality = batch
            per_replica = strategy.run(replica_step, args=(image, label, modality))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            for tracker in trackers:
                tracker.update_state(loss)
            return {m.name: m.result() for m in model.metrics}

        return step

    def modality_of_next_step(self) -> str:
        """The modality the next call trains."""
        return self.order[self.position % len(self.order)]

    def __call__(self, batch: Any) -> dict[str, tf.Tensor]:
        """Runs one step on a distributed batch (from :func:`distributed_interleaved_dataset`)."""
        function = self._functions[self.modality_of_next_step()]
        self.position += 1
        return function(batch)


__all__ = [
    "STRATEGIES",
    "DistributedRoutedStep",
    "WorkerInfo",
    "check_global_batch",
    "create_strategy",
    "distributed_interleaved_dataset",
    "is_distributed",
    "read_tf_config",
    "remove_worker_dir",
    "worker_checkpoint_dir",
    "worker_info",
]

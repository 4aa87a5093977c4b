"""Distribution strategy selection and device-dependent switches (XLA, chief worker).

Selection order (``make_strategy``):

1. ``TF_CONFIG`` set -> ``tf.distribute.MultiWorkerMirroredStrategy`` (TensorFlow's own multi-worker
   engine; every worker runs the same command).
2. ``num_replicas > 1`` on a machine without GPUs -> the CPU is split into ``num_replicas`` logical
   devices and ``tf.distribute.MirroredStrategy`` runs over them (this makes distribution testable
   on a laptop; it is not faster).
3. More than one visible GPU -> ``MirroredStrategy`` over all visible GPUs.
4. Otherwise the default (single-device) strategy: one GPU if there is one, else the CPU.

Logical CPU devices must be configured before TensorFlow initializes its devices, so scripts call
``configure_devices`` first thing in ``main``.
"""
from __future__ import annotations

import dataclasses
import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from common.errors import InputError

JIT_CHOICES = ("auto", "true", "false")


def configure_devices(num_replicas: int = 1) -> None:
    """Split the CPU into ``num_replicas`` logical devices when there is no GPU.

    Args:
        num_replicas: number of logical CPU replicas wanted (1 = leave the CPU as it is).

    Raises:
        InputError: ``num_replicas`` < 1, or TensorFlow already initialized its devices with a
            different number of logical CPUs.
    """
    if num_replicas < 1:
        raise InputError(f"--num_replicas must be >= 1, got {num_replicas}")
    if num_replicas == 1 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)])
    except RuntimeError as exc:  # devices already initialized
        have = len(tf.config.list_logical_devices("CPU"))
        if have != num_replicas:
            raise InputError(
                f"--num_replicas {num_replicas}: TensorFlow devices were already initialized with "
                f"{have} logical CPU(s); configure devices before any TensorFlow op") from exc


def make_strategy(num_replicas: int = 1) -> tf.distribute.Strategy:
    """Return the distribution strategy for this process (see module docstring).

    Args:
        num_replicas: logical CPU replicas (ignored when GPUs are visible or TF_CONFIG is set).
    """
    if os.environ.get("TF_CONFIG"):
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        return tf.distribute.get_strategy()
    if num_replicas > 1:
        configure_devices(num_replicas)
        cpus = tf.config.list_logical_devices("CPU")[:num_replicas]
        if len(cpus) < num_replicas:
            raise InputError(f"--num_replicas {num_replicas}: only {len(cpus)} logical CPUs")
        return tf.distribute.MirroredStrategy(
            [d.name for d in cpus],
            cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0].name))
    return tf.distribute.get_strategy()


_MULTI_WORKER: list[tf.distribute.MultiWorkerMirroredStrategy] = []


def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's one MultiWorkerMirroredStrategy (created on first use, then reused).

    Creating a second one re-enables collective ops, which resets TensorFlow's context ("may cause
    error when accessing previously created tensors"); several stages run in one process (tests,
    notebooks) therefore share the first.
    """
    if not _MULTI_WORKER:
        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def resolve_jit(jit_compile: str | bool) -> bool:
    """Turn ``--jit_compile {auto,true,false}`` into a bool (auto = on for GPU, off for CPU).

    XLA is 1.3-2x slower than the oneDNN kernels on the development CPU, hence off there.
    """
    if isinstance(jit_compile, bool):
        return jit_compile
    value = str(jit_compile).lower()
    if value not in JIT_CHOICES:
        raise InputError(f"--jit_compile must be one of {JIT_CHOICES}, got {jit_compile!r}")
    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return value == "true"


@dataclasses.dataclass(frozen=True)
class XlaPlan:
    """Which parts of a training step XLA compiles: the one place this is decided.

    XLA cannot compile functions that touch mirrored variables under several replicas (DESIGN.md,
    measured), so with ``--jit_compile`` on, a single replica compiles the whole step and several
    replicas compile only the variable-free loss functions. The contrastive losses are pure
    functions of tensors and are compiled in every mode; a loss holding variables (the local loss
    with the g2 region projection) only on a single replica.

    Attributes:
        whole_step: compile the whole per-replica step.
        seg_losses: compile the segmentation / joint loss terms separately.
        losses_with_variables: compile a loss function that holds variables.
    """

    whole_step: bool
    seg_losses: bool
    losses_with_variables: bool


def xla_plan(jit_compile: str | bool, num_replicas: int) -> XlaPlan:
    """The :class:`XlaPlan` for ``--jit_compile`` and the number of replicas in sync."""
    jit = resolve_jit(jit_compile)
    return XlaPlan(whole_step=jit and num_replicas == 1, seg_losses=jit and num_replicas > 1,
                   losses_with_variables=num_replicas == 1)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes summaries, best checkpoints and exports (worker 0)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    return chief_task(resolver.task_type, resolver.task_id, _has_chief_task())


def chief_task(task_type: str | None, task_id: int | None, has_chief: bool) -> bool:
    """TensorFlow's convention: the ``chief`` task if the cluster has one, else worker 0."""
    if task_type is None:
        return True
    if has_chief:
        return task_type == "chief"
    return task_type == "worker" and int(task_id or 0) == 0


def _has_chief_task() -> bool:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError:
        return False
    return "chief" in cluster


def tf_config_is_chief() -> bool:
    """Whether this process is the chief of the ``TF_CONFIG`` cluster (True without ``TF_CONFIG``).

    For scripts that start no strategy themselves (the pipeline runner decides who evaluates and
    exports). An unreadable ``TF_CONFIG`` is an ``InputError``.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        task = json.loads(raw).get("task", {})
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f"TF_CONFIG is not a JSON object: {raw[:80]!r}") from None
    return chief_task(task.get("type"), task.get("index"), _has_chief_task())


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """Index of this worker (0 for single-machine strategies), used to derive sampling seeds."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return int(strategy.cluster_resolver.task_id or 0)
    return 0


def output_dir(workdir: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """Directory where this worker writes: ``workdir`` on the chief, a temp dir on other workers.

    TensorFlow's multi-worker guide has every worker save (checkpoint saving is collective) but only
    the chief keeps its files; the others write to a throw-away location, removed when the process
    exits.
    """
    if is_chief(strategy):
        return Path(workdir)
    path = Path(tempfile.mkdtemp(prefix=f"worker{worker_id(strategy)}_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True when ``flag`` is True on any worker.

    Multi-worker: a collective (every worker must call it at the same point), so that decisions
    taken outside the training step (skip this iteration?) are the same on every worker; a worker
    that skipped a step its peers run would leave their all-reduce waiting forever.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool(flag)
    fn = getattr(strategy, "_plc_sum_over_workers", None)
    if fn is None:
        @tf.function(input_signature=[tf.TensorSpec((), tf.float32)])
        def fn(x):
            per_replica = strategy.run(tf.identity, args=(x,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        strategy._plc_sum_over_workers = fn
    return float(fn(tf.constant(float(bool(flag))))) > 0.0


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker reaches this point (no-op on one machine).

    Used before workers read files the chief has just written (e.g. its best state).
    """
    any_worker(strategy, False)

"""The one stage runner: the skeleton every training stage shares, written once.

    set the Keras dtype policy of conf.precision (models.precision.precision_policy) for the run
    env = prepare(conf)                      # strategy, workdir, config.json, dataset, split
    models = task.build()                    # inside the strategy scope (+ synchronized BN)
    optimizer, state, checkpointer           # Adam (+ loss scaling for float16) on task.trainable_variables()
    restore the latest checkpoint, or task.initialize() on a fresh start (--init_from)
    step = make_train_step(task.compute_fn())
    for segment in task.segments(run):       # one segment, or the PLC rounds
        run_loop(segment)                    # validation, best weights, checkpoints, summaries
    save final weights, write summary.json

A stage is a :class:`Task`: a small object that says which models it trains and how (build,
variables, initialization, dataset, compute function) and, for multi-segment stages, what
happens between segments (the PLC round end).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Sequence

import keras
import tensorflow as tf

import workdir as wdir
from models.precision import precision_policy, uses_loss_scaling
from training.config import StageConfig
from training.engine import checkpoint as ck
from training.engine import loop as loop_lib
from training.engine import steps
from training.engine.env import StageEnv, distribute, prepare, write_summary
from training.engine.validation import Validator

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]
BEST_STATE_DIR = "best_state"  # W/best_state: the checkpoint of the model in W/best


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of iterations run by one ``run_loop`` call.

    Attributes:
        end_step: the loop stops when the step counter reaches this value.
        dataset_fn: ``start_step -> (InputContext -> tf.data.Dataset)``: the pipeline of this
            segment for a run that starts (or resumes) at ``start_step``.
        desc: progress label.
        val_origin: iteration index from which ``val_every`` counts.
        save_at_end: save a checkpoint after the last iteration (see ``LoopConfig``).
    """

    end_step: int
    dataset_fn: Callable[[int], DatasetFn]
    desc: str
    val_origin: int = 0
    save_at_end: bool = True


@dataclasses.dataclass
class StageRun:
    """What the runner built, handed to the task's segment generator and summary."""

    env: StageEnv
    state: ck.TrainState
    optimizer: keras.optimizers.Optimizer
    checkpointer: ck.Checkpointer
    metrics: wdir.MetricsLog
    validator: Validator | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task:
    """One training stage as the runner sees it. Subclasses override what differs.

    Attributes:
        shape_keys: config keys whose change makes the workdir's checkpoints unusable.
        validates: run validation (and keep best weights) during training.
    """

    shape_keys: tuple[str, ...] = ()
    validates: bool = True
    models: dict[str, keras.Model]  # set by the runner from build()
    best_state: ck.Checkpointer | None = None  # set by attach()

    def __init__(self, conf: StageConfig, env: StageEnv) -> None:
        self.conf = conf
        self.env = env
        self.cfg = env.cfg

    # ---- before the environment exists
    @classmethod
    def check(cls, conf: StageConfig) -> None:
        """Flag checks (one-line ``InputError``s) before anything is created."""

    @classmethod
    def split_key(cls, conf: StageConfig) -> tuple[str, str]:
        """``(no_of_tr_imgs, comb_tr_imgs)`` of the volumes the stage reads."""
        return (conf.no_of_tr_imgs, conf.comb_tr_imgs)

    @classmethod
    def config_extra(cls, conf: StageConfig) -> dict[str, Any]:
        """Values recorded in ``config.json`` beside the flags and the dataset fields."""
        return {}

    # ---- models and optimization
    def build(self) -> dict[str, keras.Model]:
        """Build the models (called inside the strategy scope); returns the checkpointed ones by
        name (``model`` is the UNet whose weights the stage writes)."""
        raise NotImplementedError

    def trainable_variables(self) -> list[tf.Variable]:
        raise NotImplementedError

    def state_variables(self) -> list[tf.Variable]:
        """Non-trainable variables the forward pass updates (BN statistics; NaN-guarded)."""
        return [v for m in self.models.values() for v in m.non_trainable_variables]

    @property
    def learning_rate(self) -> float:
        raise NotImplementedError

    def attach(self, objects: dict[str, Any]) -> None:
        """Called with every checkpointed object (models, optimizer, state) before the restore.

        A validating stage keeps the full training state of its best model (every checkpointed
        object) in ``W/best_state`` beside ``W/best``, so that a later stage can continue exactly
        that model, with its Adam state (``--plc_warm_start``).
        """
        self.best_state = ck.Checkpointer(self.env.out_dir / BEST_STATE_DIR, max_to_keep=1,
                                          restore_from=self.env.workdir / BEST_STATE_DIR,
                                          **objects) if self.validates else None

    def initialize(self) -> None:
        """Fresh start only (no checkpoint restored): copy weights from ``--init_from``."""

    def compute_fn(self) -> steps.ComputeFn:
        raise NotImplementedError

    def dataset_fn(self, start_step: int) -> DatasetFn:
        raise NotImplementedError

    def skip_fn(self) -> Callable[[Any], bool] | None:
        return None

    # ---- the loop
    def segments(self, run: StageRun) -> Iterator[Segment]:
        """The segments to run; code after a ``yield`` runs when that segment is over."""
        yield Segment(end_step=self.conf.end_step, dataset_fn=self.dataset_fn, desc=self.conf.stage)

    def save_best(self, step: int, val_dice: float) -> None:
        """``W/best`` (weights, ``best.json``), then the training state in ``W/best_state``."""
        wdir.save_best(self.models["model"], self.env.out_dir, step, val_dice)
        if self.best_state is not None:
            self.best_state.save(step)

    def summary(self, run: StageRun) -> dict[str, Any]:
        """The stage-specific part of ``summary.json``."""
        return dict(run.result)

    @property
    def unet(self) -> keras.Model:
        return self.models["model"]


def run_stage(task_cls: type[Task], conf: StageConfig) -> dict[str, Any]:
    """Run (or resume) the stage ``task_cls`` with ``conf``; returns its summary.

    Every model of the stage (the trained ones, and those loaded from ``--init_from``) is built
    under the Keras dtype policy of ``conf.precision``. The checkpoint layout is the same in every
    precision (float32 variables; Adam under ``optimizer``, the float16 loss scale under
    ``loss_scale``), so a workdir may be resumed with another ``--precision`` (with
    ``--override_config``: a changed precision changes the training): weights, Adam state and
    counters carry over, the loss scale starts fresh when the previous run had none.
    """
    with precision_policy(conf.precision):
        return _run_stage(task_cls, conf)


def _run_stage(task_cls: type[Task], conf: StageConfig) -> dict[str, Any]:
    t_start = time.time()
    task_cls.check(conf)
    if uses_loss_scaling(conf.precision) and not tf.config.list_physical_devices("GPU"):
        loop_lib.log(f"[{conf.stage}] warning: --precision mixed_float16 on a CPU: TensorFlow's float16 "
                     "convolution gradients have no fast CPU kernels (measured 100x+ slower than float32); "
                     "use fp32 or mixed_bfloat16 on CPUs")
    env = prepare(conf, task_cls.shape_keys, task_cls.split_key(conf), task_cls.config_extra(conf))
    task = task_cls(conf, env)
    strategy = env.strategy
    with strategy.scope():
        task.models = task.build()
        if env.replicas > 1:
            for model in task.models.values():
                steps.synchronize_batchnorm(model)
    variables = task.trainable_variables()
    optimizer = steps.make_optimizer(task.learning_rate, variables, strategy,
                                     loss_scale=uses_loss_scaling(conf.precision))
    state = ck.TrainState()
    objects = {**task.models, **steps.checkpoint_objects(optimizer), "state": state}
    checkpointer = ck.Checkpointer(env.out_dir / "ckpt", restore_from=env.workdir / "ckpt", **objects)
    task.attach(objects)
    if checkpointer.restore_latest():
        loop_lib.log(f"[{conf.stage}] resuming from step {int(state.step.numpy())}")
    else:
        task.initialize()
    metrics = wdir.MetricsLog(env.out_dir, int(state.step.numpy()))
    validator = Validator(conf.data_dir, env.split.val, env.cfg, task.unet) if task.validates else None
    run = StageRun(env=env, state=state, optimizer=optimizer, checkpointer=checkpointer, metrics=metrics,
                   validator=validator)
    step_fn = steps.make_train_step(strategy, task.compute_fn(), variables, optimizer, jit_compile=env.xla.whole_step,
                                    state_variables=task.state_variables())
    writers = env.writers()
    for seg in task.segments(run):
        if int(state.step.numpy()) >= seg.end_step:
            continue
        batches = distribute(strategy, seg.dataset_fn(int(state.step.numpy())))
        lcfg = loop_lib.LoopConfig(
            workdir=str(env.out_dir), end_step=seg.end_step, val_every=int(conf.val_every) if validator else 0,
            ckpt_every=int(conf.ckpt_every), log_every=int(conf.log_every), is_chief=env.is_chief,
            desc=seg.desc, val_origin=seg.val_origin, save_at_end=seg.save_at_end)
        run.result = loop_lib.run_loop(lcfg, state, step_fn, batches, checkpointer, metrics,
                                       validate_fn=validator, save_best_fn=task.save_best if validator else None,
                                       skip_fn=task.skip_fn(), writers=writers)
    if not run.result:  # nothing left to run (a finished stage rerun): report the checkpointed state
        run.result = loop_lib.state_summary(state)
    if env.is_chief:
        wdir.save_final(task.unet, env.out_dir)
    summary = {"stage": conf.stage, **task.summary(run), "seconds": time.time() - t_start,
               "replicas": env.replicas}
    write_summary(env, summary)
    return summary


def labeled_arrays(volumes: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """``([image (D,H,W)], [label (D,H,W)])`` of loaded volumes."""
    return [v.image for v in volumes], [v.label for v in volumes]

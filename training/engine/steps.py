"""Step builders shared by the stage scripts.

A *compute function* maps one replica's batch to ``(loss, metrics)`` where every value is already
scaled for the global batch: ``sum(per_unit) / (units_per_replica * num_replicas)``. Summing those
over replicas (what the optimizer does with gradients, and what :func:`make_train_step` does with the
reported values) therefore gives the mean over all units of all replicas: the loss is scaled exactly
once, and one step on R replicas with batches b1..bR equals one step on one replica with their union
(with synchronized BatchNorm, see :func:`synchronize_batchnorm`).

:func:`make_train_step` wraps a compute function into a ``tf.function`` that runs it under
``strategy.run``, computes gradients, skips the update (NaN guard) when the loss or any gradient is
non-finite on any replica, and otherwise applies Adam.

Mixed float16 (``--precision mixed_float16``): the optimizer is a ``keras.optimizers.LossScaleOptimizer``
around Adam (:func:`make_optimizer`); the step differentiates the scaled loss, and a step whose loss
is finite but whose scaled gradients overflow is handed to the loss-scale optimizer, which halves the
scale and skips the update. Such a step reports :data:`STEP_OVERFLOW`, which the loop counts apart
from the non-finite steps that stop a diverging run; an overflow at a scale already at or below
:data:`LOSS_SCALE_FLOOR` (the gradients overflow without scaling) is a non-finite step.

XLA: what is compiled is decided once, by :func:`training.engine.strategy.xla_plan` (the whole step
on a single replica; only the loss functions, ``jit_loss``, under several replicas).
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from models.transfer import iter_layers

ComputeFn = Callable[[Any, int], tuple[tf.Tensor, dict[str, tf.Tensor]]]

ADAM_EPSILON = 1e-8  # TF1 AdamOptimizer default (ORIGINAL_SPEC §2.4)

# Status of a step (third value returned by the step of make_train_step; a bool True/False from a
# hand-written step reads as STEP_APPLIED / STEP_NONFINITE).
STEP_NONFINITE = 0  # skipped: non-finite loss or gradients (counts towards divergence)
STEP_APPLIED = 1
STEP_OVERFLOW = 2  # skipped by float16 loss scaling: finite loss, overflowing gradients, scale halved
LOSS_SCALE_FLOOR = 1.0  # gradients that overflow at a scale <= this are non-finite, not an overflow


def make_optimizer(learning_rate: float, variables: list[tf.Variable],
                   strategy: tf.distribute.Strategy, loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """Adam with the TF1 defaults, built on ``variables`` inside the strategy scope.

    Building before any restore or compilation creates the slot variables as mirrored variables
    and lets a checkpoint restore them.

    Args:
        learning_rate: constant learning rate.
        variables: the variables to optimize.
        strategy: the distribution strategy.
        loss_scale: wrap Adam in a ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling for
            ``--precision mixed_float16``; Keras' defaults: initial scale 2^15, doubled after 2000
            finite steps).
    """
    with strategy.scope():
        opt = keras.optimizers.Adam(learning_rate=float(learning_rate), beta_1=0.9, beta_2=0.999,
                                    epsilon=ADAM_EPSILON)
        if loss_scale:
            opt = keras.optimizers.LossScaleOptimizer(opt)
        opt.build(variables)
    return opt


def loss_scaler(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.LossScaleOptimizer | None:
    """``optimizer`` if it scales the loss (a ``LossScaleOptimizer``), else None."""
    return optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None


def checkpoint_objects(optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """The checkpoint entries of an optimizer from :func:`make_optimizer`.

    ``optimizer`` is always the Adam optimizer (the same checkpoint layout in every precision, so a
    run can be resumed in another precision with its Adam state); with loss scaling,
    ``loss_scale`` holds the scaler's state (the scale and its growth counter), absent otherwise.
    """
    scaler = loss_scaler(optimizer)
    if scaler is None:
        return {"optimizer": optimizer}
    return {"optimizer": scaler.inner_optimizer, "loss_scale": scaler}


def synchronize_batchnorm(model: keras.Model, synchronized: bool = True) -> int:
    """Switch every BatchNormalization layer (also inside nested models) to synchronized moments.

    Under a multi-replica strategy each BN layer then normalizes with the mean/variance over the
    batches of all replicas, which makes R replicas equivalent to one replica with the union batch.
    Returns the number of layers changed.
    """
    count = 0
    stack = [model]
    seen = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
            count += 1
        stack.extend(getattr(layer, "layers", []) or [])
    return count


def variables_of(models: list[keras.Model], exclude_prefixes: tuple[str, ...] = ()) -> list[tf.Variable]:
    """Trainable variables of ``models`` whose layer name does not start with an excluded prefix.

    Used to keep the frozen encoder out of the optimizer during decoder pre-training while its BN
    layers still run in training mode (ORIGINAL_SPEC §3.3, §8.1).
    """
    out: list[tf.Variable] = []
    seen: set[int] = set()
    for model in models:
        if model is None:
            continue
        for layer in iter_layers(model):
            if layer.name.startswith(tuple(exclude_prefixes)) and exclude_prefixes:
                continue
            for v in layer.trainable_weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
    return out


def scale_units(per_unit: tf.Tensor, num_replicas: int) -> tf.Tensor:
    """``sum(per_unit) / (len(per_unit) * num_replicas)``: this replica's share of the global mean."""
    per_unit = tf.reshape(tf.cast(per_unit, tf.float32), [-1])  # (U,)
    n = tf.cast(tf.size(per_unit), tf.float32)
    return tf.reduce_sum(per_unit) / (n * float(num_replicas))


def _apply_if_finite(optimizer: keras.optimizers.Optimizer, grads: list, variables: list,
                     finite: tf.Tensor) -> None:
    """Apply ``grads`` only when ``finite`` (identical on every replica); else leave all state as is.

    Same construction as Keras' LossScaleOptimizer: the optimizer's ``apply_gradients`` calls
    ``merge_call`` under MirroredStrategy, which may not sit inside a replica-context ``cond``, so
    the ``cond`` is placed in the cross-replica context.
    """
    keep = [i for i, g in enumerate(grads) if g is not None]
    kept_vars = [variables[i] for i in keep]

    def apply(kept_grads):
        optimizer.apply_gradients(list(zip(kept_grads, kept_vars)))
        return tf.constant(True)

    kept_grads = [grads[i] for i in keep]
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(kept_grads), lambda: tf.constant(False))
        return

    def cross_replica(distribution, finite_pr, grads_pr):
        # grads_pr holds every replica's own gradients (PerReplica); each replica applies its own
        # and the optimizer all-reduces them.
        finite_value = distribution.experimental_local_results(finite_pr)[0]

        def do_apply():
            distribution.extended.call_for_each_replica(apply, args=(grads_pr,))
            return tf.constant(True)

        tf.cond(finite_value, do_apply, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, kept_grads))


def make_train_step(strategy: tf.distribute.Strategy, compute_fn: ComputeFn,
                    variables: list[tf.Variable], optimizer: keras.optimizers.Optimizer,
                    jit_compile: bool = False,
                    state_variables: list[tf.Variable] | None = None
                    ) -> Callable[[Any], tuple[tf.Tensor, dict, tf.Tensor]]:
    """Build the distributed training step.

    Args:
        strategy: the distribution strategy (``training.engine.strategy.make_strategy``).
        compute_fn: ``(replica_batch, num_replicas) -> (loss, metrics)``, values scaled for the
            global batch (see module docstring).
        variables: variables to optimize (the optimizer must have been built on them).
        optimizer: Keras optimizer built inside ``strategy.scope()`` (:func:`make_optimizer`; a
            ``LossScaleOptimizer`` turns on loss scaling).
        jit_compile: compile the whole step with XLA (single-replica strategies only; under
            several replicas the compute function is expected to compile its losses itself).
        state_variables: non-trainable variables the forward pass updates (BatchNorm moving
            statistics); a skipped step puts them back to their values before the step, so a
            non-finite batch cannot poison them.

    Returns:
        ``step(distributed_batch) -> (loss, metrics, status)``: global-mean loss and metrics
        (scalars; with loss scaling ``loss_scale``, the scale after the step, is added) and the
        int32 status: :data:`STEP_APPLIED`, :data:`STEP_NONFINITE` (nothing changed) or
        :data:`STEP_OVERFLOW` (nothing changed but the halved loss scale).
    """
    replicas = int(strategy.num_replicas_in_sync)
    scaler = loss_scaler(optimizer)
    guarded = list(state_variables or [])

    def replica_step(batch):
        saved = [tf.identity(v) for v in guarded]
        with tf.GradientTape() as tape:
            loss, metrics = compute_fn(batch, replicas)
            target = loss if scaler is None else scaler.scale_loss(loss)
        grads = tape.gradient(target, variables)
        loss_bad = tf.logical_not(tf.math.is_finite(loss))
        grads_bad = tf.constant(False)
        for g in grads:
            if g is not None:
                grads_bad = tf.logical_or(grads_bad, tf.logical_not(tf.reduce_all(tf.math.is_finite(g))))
        n_bad = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.cast(tf.stack([loss_bad, grads_bad]), tf.float32))  # (2,)
        loss_ok, grads_ok = tf.equal(n_bad[0], 0.0), tf.equal(n_bad[1], 0.0)
        finite = tf.logical_and(loss_ok, grads_ok)
        for v, old in zip(guarded, saved):
            v.assign(tf.where(finite, v, old))
        if scaler is None:
            _apply_if_finite(optimizer, grads, variables, finite)
            return loss, metrics, tf.where(finite, STEP_APPLIED, STEP_NONFINITE)
        scale = tf.identity(scaler.dynamic_scale.value)  # before the step
        overflow = tf.logical_and(tf.logical_and(loss_ok, tf.logical_not(grads_ok)), scale > LOSS_SCALE_FLOOR)
        if replicas > 1:
            # The scaler takes its finite/overflow verdict from the first replica's gradients: make
            # them non-finite on every replica when any replica overflowed.
            poison = tf.where(grads_ok, 1.0, float("nan"))
            grads = [g if g is None else g * tf.cast(poison, g.dtype) for g in grads]
        # A finite loss goes to the scaler: finite gradients are unscaled and applied, overflowing
        # ones halve the scale. A non-finite loss changes nothing.
        _apply_if_finite(scaler, grads, variables, loss_ok)
        status = tf.where(finite, STEP_APPLIED, tf.where(overflow, STEP_OVERFLOW, STEP_NONFINITE))
        return loss, metrics, status

    def step(batch):
        loss, metrics, status = strategy.run(replica_step, args=(batch,))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        metrics = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                   for k, v in metrics.items()}
        if scaler is not None:
            metrics["loss_scale"] = tf.identity(scaler.dynamic_scale.value)
        status = strategy.experimental_local_results(status)[0]
        return loss, metrics, status

    if jit_compile and replicas > 1:
        raise ValueError("XLA cannot compile a whole step over mirrored variables (see strategy.xla_plan)")
    return tf.function(step, jit_compile=bool(jit_compile) or None)


def maybe_jit(fn: Callable, jit_compile: bool) -> Callable:
    """``tf.function(fn, jit_compile=True)`` if requested, else ``fn`` unchanged (for loss terms)."""
    if jit_compile:
        return tf.function(fn, jit_compile=True)
    return fn


# ----------------------------------------------------------------------------------------------
# Compute functions of the stages. Each closes over its models and returns a ComputeFn.


def seg_compute(model: keras.Model, seg_loss_fn: Callable, jit_loss: bool = False) -> ComputeFn:
    """Supervised step (baseline / fine-tuning): batch ``(x (B,H,W,1), y (B,H,W,C))``.

    ``seg_loss_fn(logits, labels, reduction="none") -> (B,)`` per-image loss.
    """
    loss_fn = maybe_jit(lambda logits, y: seg_loss_fn(logits, y, reduction="none"), jit_loss)

    def compute(batch, replicas):
        x, y = batch
        logits = model(x, training=True)  # (B, H, W, C)
        per_image = loss_fn(logits, y)  # (B,)
        loss = scale_units(per_image, replicas)
        return loss, {"seg_loss": loss}

    return compute


def joint_model(unet: keras.Model) -> keras.Model:
    """Two-output view of ``unet``: ``x -> [logits (N,H,W,C), dec_c1_a (N,H,W,16)]`` (shared weights)."""
    from models.unet import LAST_DECODER_LAYER

    return keras.Model(unet.input, [unet.output, unet.get_layer(LAST_DECODER_LAYER).output],
                       name=f"{unet.name}_joint")


def joint_compute(two_out: keras.Model, h_head: keras.Model, seg_loss_fn: Callable,
                  plc_loss_fn: Callable, lamda_local: float, jit_loss: bool = False,
                  contrastive: bool = True) -> ComputeFn:
    """PLC joint step (ORIGINAL_SPEC §3.4.1): one forward over ``[x_lab (N_l) | x_con (2B)]``.

    BatchNorm of all shared layers (segmentation head included) sees all ``N_l + 2B`` images; the
    segmentation loss uses the logits of rows ``[:N_l]``; the h head runs on ``dec_c1_a`` rows
    ``[N_l:]`` (its BN sees those only). Loss = mean seg loss + lamda_local * mean pair loss.

    Batch: dict with ``x_lab (N_l,H,W,1)``, ``y_lab (N_l,H,W,C)``, ``x_con (2B,H,W,1)``,
    ``y_con (2B,H,W,C)``, ``anchor_yx (2B,C-1,P,2)``, ``anchor_valid (2B,C-1,P)``.
    ``plc_loss_fn(emb, labels, anchor_yx, anchor_valid, reduction="none") -> per-pair (B,)``.
    With ``contrastive=False`` the same 40-image forward is run with the segmentation loss only
    (the benchmark's reference step).
    """
    seg_fn = maybe_jit(lambda logits, y: seg_loss_fn(logits, y, reduction="none"), jit_loss)
    plc_fn = tf.function(
        lambda emb, y, yx, valid: plc_loss_fn(emb, y, yx, valid, reduction="none"), jit_compile=True)

    def compute(batch, replicas):
        n_lab = tf.shape(batch["x_lab"])[0]
        x = tf.concat([batch["x_lab"], batch["x_con"]], axis=0)  # (N_l + 2B, H, W, 1)
        logits_all, dec = two_out(x, training=True)  # (N, H, W, C), (N, H, W, 16)
        seg = scale_units(seg_fn(logits_all[:n_lab], batch["y_lab"]), replicas)
        if not contrastive:
            return seg, {"seg_loss": seg}
        emb = h_head(dec[n_lab:], training=True)  # (2B, H, W, 16)
        plc = scale_units(plc_fn(emb, batch["y_con"], batch["anchor_yx"], batch["anchor_valid"]),
                          replicas)
        loss = seg + float(lamda_local) * plc
        return loss, {"seg_loss": seg, "local_loss": plc, "net_loss": loss}

    return compute


def contrastive_compute(backbone: keras.Model, head: keras.Model, loss_fn: Callable,
                        name: str, jit_loss: bool = True) -> ComputeFn:
    """Pre-training step: ``loss_fn(head(backbone(x)), reduction="none")`` on a batch ``x``.

    ``loss_fn`` is compiled with XLA in every mode when it is a pure tensor function
    (``jit_loss``); the local loss with the g2 region projection holds variables and is compiled
    only on a single replica.
    """
    compiled = maybe_jit(lambda f: loss_fn(f, reduction="none"), jit_loss)

    def compute(batch, replicas):
        feats = head(backbone(batch, training=True), training=True)
        loss = scale_units(compiled(feats), replicas)
        return loss, {name: loss}

    return compute

"""--precision (models.precision): float32 outputs under every Keras policy, agreement of the mixed
policies with fp32, finite training steps in each policy, float16 loss scaling together with the
NaN guard, checkpoints shared by every precision, float32 SavedModel signature under mixed precision,
and the XLA-compiled baseline step against the graph and eager ones."""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import InputError
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
from losses.segmentation import segmentation_loss
from models.heads import build_g1, build_g2, build_h
from models.precision import OUTPUT_DTYPE, PRECISIONS, check_precision, precision_of, precision_policy
from models.unet import build_unet, conv_block
from training.engine import checkpoint as ck
from training.engine import loop as loop_lib
from training.engine import steps
from workdir import MetricsLog

MIXED = ("mixed_bfloat16", "mixed_float16")
COMPUTE = {"fp32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
SEG = functools.partial(segmentation_loss, dsc_loss=2)
C = 4
S = 32  # UNet input size (a multiple of 32)


def _batch(seed: int, n: int = 2, size: int = S) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, C, (n, size, size))
    x = (rng.random((n, size, size, 1)) * 0.3 + lab[..., None] * 0.2).astype("f4")
    return tf.constant(x), tf.one_hot(lab, C)


def _tiny_unet(size: int | None = 16) -> keras.Model:
    """Two levels of the UNet's conv blocks, skip connection, float32 logits layer (as build_unet)."""
    x_in = keras.Input((size, size, 1))
    a = conv_block(x_in, "enc_c1_a", 4)  # (N, s, s, 4)
    b = conv_block(keras.layers.MaxPooling2D(2)(a), "enc_c2_a", 8)  # (N, s/2, s/2, 8)
    u = keras.layers.UpSampling2D(2)(b)  # (N, s, s, 8)
    d = conv_block(keras.layers.Concatenate()([u, a]), "dec_c1_a", 4)  # (N, s, s, 4)
    logits = keras.layers.Conv2D(C, 3, padding="same", use_bias=False, dtype=OUTPUT_DTYPE,
                                 name="seg_fin_layer")(d)  # (N, s, s, C)
    return keras.Model(x_in, logits)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [v.numpy() for v in model.weights]


def test_check_precision_names_the_flag():
    assert check_precision("mixed_float16") == "mixed_float16"
    with pytest.raises(InputError, match=r"--precision must be one of fp32, mixed_bfloat16, mixed_float16, got 'fp16'"):
        check_precision("fp16")


def test_precision_flag_of_both_stage_scripts():
    from absl import flags

    from training.flags import default_config, parse_config

    argv = ["--data_dir=d", "--workdir=w"]
    assert parse_config("selftrain", ["--stage=joint", *argv, "--precision=mixed_float16"]).precision == "mixed_float16"
    conf = parse_config("pretrain", ["--stage=global", *argv, "--precision=mixed_bfloat16"])
    assert conf.to_json()["precision"] == "mixed_bfloat16"  # recorded in config.json
    assert default_config("baseline").precision == "fp32"
    with pytest.raises(flags.IllegalFlagValueError):
        parse_config("selftrain", ["--stage=baseline", *argv, "--precision=fp16"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_models_compute_in_policy_with_float32_variables_and_outputs(precision):
    before = keras.config.dtype_policy().name
    with precision_policy(precision):
        unet = build_unet(C, (S, S))
        h = build_h()
        g1 = build_g1((1, 1, 128))
        g2, proj = build_g2(16)
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert precision_of(unet) == precision
    assert unet.get_layer("enc_c1_a_conv").compute_dtype == COMPUTE[precision]
    assert {v.dtype for m in (unet, h, g1, g2, proj) for v in m.weights} == {"float32"}
    x, _ = _batch(0)
    logits = unet(x, training=False)
    emb = h(tf.zeros((1, 4, 4, 16)))
    assert (logits.dtype, emb.dtype) == (tf.float32, tf.float32)
    assert g1(tf.zeros((2, 1, 1, 128))).dtype == tf.float32
    assert g2(tf.zeros((1, 4, 4, 16))).dtype == tf.float32 and proj(tf.zeros((3, 144))).dtype == tf.float32


def test_mixed_policies_agree_with_fp32_on_logits_and_losses():
    """Same weights in every policy (a full UNet at 32x32 + h). Stated tolerances, about 3x the
    largest difference measured over three seeds (bf16: logits 1.7% of max |logit|, Dice loss
    2.7e-3, PLC loss 0.35%; fp16: 0.4%, 5e-4, 0.15%): logits max |diff| <= 5% (bf16) / 1.2% (fp16)
    of max |logit|; Dice loss |diff| <= 1e-2 / 2e-3; PLC local loss <= 1.5% / 0.5% relative."""
    from data.plc_selection import sample_anchors

    tol = {"mixed_bfloat16": (0.05, 1e-2, 0.015), "mixed_float16": (0.012, 2e-3, 0.005)}
    keras.utils.set_random_seed(1)
    ref_unet, ref_h = build_unet(C, (S, S)), build_h()
    x, y = _batch(1)
    rng = np.random.default_rng(2)
    con = rng.integers(0, C, (4, S, S))
    yx, valid = sample_anchors(con, C, 3, rng)
    unit = {"x_lab": x, "y_lab": y, "x_con": _batch(3, n=4)[0], "y_con": tf.one_hot(con, C),
            "anchor_yx": tf.constant(yx), "anchor_valid": tf.constant(valid)}

    def measure(unet, h):
        logits = unet(x, training=False).numpy()  # (2, S, S, C)
        seg, _ = steps.seg_compute(unet, SEG)((x, y), 1)
        joint = steps.joint_compute(steps.joint_model(unet), h, SEG, pseudo_label_local_contrastive_loss, 0.1)
        _, mets = joint(unit, 1)
        return logits, float(seg), float(mets["local_loss"])

    weights = ref_unet.get_weights(), ref_h.get_weights()  # before the training-mode BN updates
    ref = measure(ref_unet, ref_h)
    assert all(np.isfinite(v).all() for v in ref)
    for precision in MIXED:
        with precision_policy(precision):
            unet, h = build_unet(C, (S, S)), build_h()
        unet.set_weights(weights[0])
        h.set_weights(weights[1])
        logits, seg, local = measure(unet, h)
        t_logit, t_seg, t_local = tol[precision]
        assert np.abs(logits - ref[0]).max() <= t_logit * np.abs(ref[0]).max(), precision
        assert abs(seg - ref[1]) <= t_seg, (precision, seg, ref[1])
        assert abs(local - ref[2]) <= t_local * abs(ref[2]), (precision, local, ref[2])
        assert not np.array_equal(logits, ref[0])  # really computed in another precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_few_steps_in_each_policy_are_finite_and_applied(precision):
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with precision_policy(precision):
        model = _tiny_unet()
    opt = steps.make_optimizer(1e-2, model.trainable_variables, strategy,
                               loss_scale=precision == "mixed_float16")
    assert (steps.loss_scaler(opt) is not None) == (precision == "mixed_float16")
    step = steps.make_train_step(strategy, steps.seg_compute(model, SEG), model.trainable_variables, opt,
                                 state_variables=model.non_trainable_variables)
    before = _weights(model)
    losses = []
    for k in range(3):
        loss, mets, status = step(_batch(k, n=4, size=16))
        assert int(status) == steps.STEP_APPLIED
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert int(steps.checkpoint_objects(opt)["optimizer"].iterations.numpy()) == 3
    assert ("loss_scale" in mets) == (precision == "mixed_float16")
    assert all(np.isfinite(w).all() for w in _weights(model))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, _weights(model)))


def _fp16_overflow_setup(jit_compile: bool = False):
    """A float16 model whose scaled gradients overflow until the loss scale is low enough:
    ``loss = k * sum(logits)`` gives every logit the gradient ``k * scale``."""
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with precision_policy("mixed_float16"):
        model = _tiny_unet(8)
    k = tf.Variable(1.0, trainable=False)

    def compute(batch, replicas):
        logits = model(batch, training=True)  # (N, 8, 8, C) float32
        loss = k * tf.reduce_sum(logits) / float(replicas)
        return loss, {"loss_sum": loss}

    opt = steps.make_optimizer(1e-3, model.trainable_variables, strategy, loss_scale=True)
    step = steps.make_train_step(strategy, compute, model.trainable_variables, opt, jit_compile=jit_compile,
                                 state_variables=model.non_trainable_variables)
    return model, opt, step, k


def test_float16_overflow_lowers_the_scale_and_is_not_divergence(tmp_path):
    model, opt, step, k = _fp16_overflow_setup()
    x = tf.ones((2, 8, 8, 1))
    state = ck.TrainState()
    ckpt = ck.Checkpointer(tmp_path / "ckpt", model=model, state=state, **steps.checkpoint_objects(opt))
    cfg = loop_lib.LoopConfig(workdir=str(tmp_path), end_step=12, val_every=0, ckpt_every=100, log_every=1,
                              max_nonfinite=2)
    before = _weights(model)
    statuses = []

    def recording(batch):
        out = step(batch)
        statuses.append(int(out[2]))
        return out

    # 2^15 * sum(logits) overflows float16 (max 65504) in the backward pass: several overflow steps in a row,
    # more than max_nonfinite, then the scale is low enough and the steps apply.
    res = loop_lib.run_loop(cfg, state, recording, iter([x] * 12), ckpt, MetricsLog(tmp_path, 0))
    n_over = statuses.index(steps.STEP_APPLIED)
    assert n_over > cfg.max_nonfinite and set(statuses[:n_over]) == {steps.STEP_OVERFLOW}
    assert set(statuses[n_over:]) == {steps.STEP_APPLIED}
    assert res["loss_scale_overflows"] == n_over and res["nonfinite"] == 0 and res["step"] == 12
    assert float(opt.dynamic_scale.numpy()) == 2.0 ** 15 / 2 ** n_over
    assert int(opt.inner_optimizer.iterations.numpy()) == 12 - n_over  # Adam only saw applied steps
    assert all(np.isfinite(w).all() for w in _weights(model))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, _weights(model)))


def test_float16_nonfinite_loss_and_overflow_without_scaling_are_nonfinite():
    model, opt, step, k = _fp16_overflow_setup()
    before = _weights(model)
    bad = tf.fill((2, 8, 8, 1), np.nan)
    _, _, status = step(bad)
    assert int(status) == steps.STEP_NONFINITE  # a NaN loss changes nothing, the scale included
    assert float(opt.dynamic_scale.numpy()) == 2.0 ** 15
    k.assign(1e9)  # gradients overflow float16 even unscaled
    opt.dynamic_scale.assign(1.0)
    _, _, status = step(tf.ones((2, 8, 8, 1)))
    assert int(status) == steps.STEP_NONFINITE
    assert int(opt.inner_optimizer.iterations.numpy()) == 0
    for a, b in zip(before, _weights(model)):  # weights and BN statistics untouched
        np.testing.assert_array_equal(a, b)


def test_xla_whole_step_with_loss_scaling():
    """The whole step compiled by XLA (--jit_compile auto on one GPU) keeps the loss-scaling logic."""
    _, opt, step, _ = _fp16_overflow_setup(jit_compile=True)
    statuses = [int(step(tf.ones((2, 8, 8, 1)))[2]) for _ in range(7)]
    n_over = statuses.index(steps.STEP_APPLIED)
    assert n_over >= 1 and statuses == [steps.STEP_OVERFLOW] * n_over + [steps.STEP_APPLIED] * (7 - n_over)
    assert float(opt.dynamic_scale.numpy()) == 2.0 ** 15 / 2 ** n_over
    assert int(opt.iterations.numpy()) == 7 - n_over


def test_checkpoints_resume_across_precisions(tmp_path):
    """Adam is always checkpointed as ``optimizer`` and the float16 scale as ``loss_scale``: a run
    resumes in another precision with its weights, Adam state and counters."""
    strategy = tf.distribute.get_strategy()

    def setup(precision):
        with precision_policy(precision):
            model = _tiny_unet()
        opt = steps.make_optimizer(1e-2, model.trainable_variables, strategy,
                                   loss_scale=precision == "mixed_float16")
        state = ck.TrainState()
        objects = {"model": model, "state": state, **steps.checkpoint_objects(opt)}
        return model, opt, state, ck.Checkpointer(tmp_path / "ckpt", **objects)

    keras.utils.set_random_seed(0)
    model, opt, state, ckpt = setup("fp32")
    step = steps.make_train_step(strategy, steps.seg_compute(model, SEG), model.trainable_variables, opt)
    step(_batch(0, n=2, size=16))
    state.step.assign(1)
    ckpt.save(1)
    saved = _weights(model)
    adam_m = [v.numpy() for v in opt.variables]

    model16, opt16, state16, ckpt16 = setup("mixed_float16")
    assert ckpt16.restore_latest()
    assert int(state16.step.numpy()) == 1 and int(opt16.iterations.numpy()) == 1
    for a, b in zip(saved, _weights(model16)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(adam_m, [v.numpy() for v in opt16.inner_optimizer.variables]):
        np.testing.assert_array_equal(a, b)
    assert float(opt16.dynamic_scale.numpy()) == 2.0 ** 15  # fresh scale: the fp32 run had none
    opt16.dynamic_scale.assign(512.0)
    state16.step.assign(2)
    ckpt16.save(2)

    model_b, opt_b, state_b, ckpt_b = setup("mixed_bfloat16")  # back without loss scaling
    assert ckpt_b.restore_latest() and int(state_b.step.numpy()) == 2
    _, opt_again, _, ckpt_again = setup("mixed_float16")
    assert ckpt_again.restore_latest() and float(opt_again.dynamic_scale.numpy()) == 512.0


def test_export_under_mixed_precision_is_float32_in_and_out(tmp_path):
    from evaluation.export import SIGNATURE_NAME, export_saved_model
    from workdir import load_model, saved_model_metadata

    keras.utils.set_random_seed(4)
    ref = _tiny_unet(None)  # the UNet's own float32 logits layer: test_models_compute_in_policy_...
    with precision_policy("mixed_bfloat16"):
        model = _tiny_unet(None)
    model.set_weights(ref.get_weights())
    path = export_saved_model(model, tmp_path / "exp", {"dataset": "synthetic"})
    assert saved_model_metadata(path)["precision"] == "mixed_bfloat16"
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[SIGNATURE_NAME]
    spec = fn.structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32
    assert fn.structured_outputs["probabilities"].dtype == tf.float32
    x, _ = _batch(5, n=2, size=S)
    out = fn(images=x)
    assert out["probabilities"].dtype == tf.float32 and out["labels"].dtype == tf.int32
    want = tf.nn.softmax(ref(x, training=False)).numpy()
    assert np.abs(out["probabilities"].numpy() - want).max() < 0.02  # bf16 network, float32 softmax
    # The SavedModel runs at its export precision: asking for another one is an error.
    assert load_model(path, precision="mixed_bfloat16").dataset == "synthetic"
    with pytest.raises(InputError, match="exported at mixed_bfloat16"):
        load_model(path, precision="fp32")


def test_load_model_builds_the_requested_precision(tmp_path):
    from workdir import load_model, save_final

    keras.utils.set_random_seed(5)
    ref = build_unet(C)
    save_final(ref, tmp_path)
    weights = tmp_path / "final" / "model.weights.h5"
    model, _ = load_model(weights, num_classes=C, precision="mixed_float16")
    assert precision_of(model) == "mixed_float16"
    np.testing.assert_array_equal(model.get_weights()[0], ref.get_weights()[0])
    assert precision_of(load_model(weights, num_classes=C)[0]) == "fp32"  # the current policy


def test_compiled_graph_and_eager_baseline_steps_agree():
    """The XLA-compiled whole step (what --jit_compile auto does on a single GPU) equals the graph
    step and the eager step on CPU: loss, weights and BN statistics after two steps. SGD, because
    Adam's first update lr * g / (|g| + eps) turns round-off in near-zero gradients into +-lr."""
    strategy = tf.distribute.get_strategy()
    batches = [_batch(k, n=4, size=16) for k in range(2)]

    def run(mode):
        keras.utils.set_random_seed(7)
        model = _tiny_unet()
        opt = keras.optimizers.SGD(0.5)
        opt.build(model.trainable_variables)
        step = steps.make_train_step(strategy, steps.seg_compute(model, SEG), model.trainable_variables, opt,
                                     jit_compile=mode == "xla", state_variables=model.non_trainable_variables)
        initial = _weights(model)
        tf.config.run_functions_eagerly(mode == "eager")
        try:
            losses = [float(step(b)[0]) for b in batches]
        finally:
            tf.config.run_functions_eagerly(False)
        return losses, _weights(model), initial

    ref_losses, ref_w, initial = run("graph")
    assert max(np.abs(a - b).max() for a, b in zip(ref_w, initial)) > 1e-2  # the steps moved the weights
    for mode in ("xla", "eager"):
        losses, w, _ = run(mode)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=mode)
        for a, b in zip(w, ref_w):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=mode)

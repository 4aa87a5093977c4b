"""SavedModel export: reload in a fresh process without the project, saved_model_cli show / run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import configs

from common.errors import InputError
from evaluation import export
from tests import _eval_data as ed
from workdir import latest_version, load_model

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = ed.random_unet(3, num_classes=3)
    x = np.random.default_rng(1).normal(0.4, 0.3, (3, 64, 96, 1)).astype(np.float32)
    # the BN moving statistics are not the initial ones, so a loader that lost them would differ
    assert not np.allclose(model.get_layer("enc_c1_a_bn").moving_mean.numpy(), 0.0)
    fresh = ed.random_unet(3, num_classes=3)
    for v in fresh.non_trainable_variables:  # same weights, initial BN statistics (0 mean, 1 var)
        v.assign(np.zeros(v.shape) if "mean" in v.path else np.ones(v.shape))
    logits = model(x, training=False).numpy()  # (3, 64, 96, 3)
    assert not np.allclose(logits, fresh(x, training=False).numpy(), atol=1e-3)
    path = export.export_saved_model(model, root / "plc", {"dataset": "synthetic"})
    np.save(root / "x.npy", x)
    return root, path, x, tf.nn.softmax(logits).numpy(), np.argmax(logits, -1), model


def test_layout_and_versions(exported):
    root, path, *_, model = exported
    assert path == root / "plc" / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    meta = json.loads((path / export.METADATA_PATH).read_text())
    assert meta["num_classes"] == 3 and meta["dataset"] == "synthetic" and meta["input"] == "images"
    assert export.next_version(root / "plc") == 2
    assert latest_version(root / "plc") == path
    (root / "plc" / "7").mkdir()  # empty folder: not a model, but its number is taken
    (root / "plc" / "abc").mkdir()
    assert export.next_version(root / "plc") == 8
    assert latest_version(root / "plc") == path
    assert export.next_version(root / "new") == 1
    with pytest.raises(InputError, match="already exists"):
        export.export_saved_model(model, root / "plc", version=1)


def test_fresh_process_reload_and_saved_model_cli(exported):
    """One fresh process that does not import the project (one TensorFlow start instead of three).

    It runs ``saved_model_cli show`` and ``run`` through the function the ``saved_model_cli`` command
    calls; ``run`` uses the TF1 session loader, as TF Serving does, so the BN moving statistics must
    survive it. Then the TF2 loader: full batch, and a size that is not a multiple of 32 is refused.
    """
    root, path, x, probs, labels, model = exported
    # --input_exprs takes a Python literal (TF 2.21 no longer evaluates expressions such as np.ones).
    small = np.round(x[:1, :32, :64], 4)  # (1, 32, 64, 1)
    np.save(root / "small.npy", small)
    ref = tf.nn.softmax(model(small, training=False)).numpy()
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        assert not any(m.split('.')[0] in ('evaluation', 'models', 'data', 'configs') for m in sys.modules)
        from tensorflow.python.tools.saved_model_cli import main as saved_model_cli  # the console script

        def cli(*args):
            sys.argv = ['saved_model_cli', *args]
            try:
                saved_model_cli()
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code

        cli('show', '--dir', {str(path)!r}, '--all')
        small = np.load({str(root / 'small.npy')!r}).tolist()
        cli('run', '--dir', {str(path)!r}, '--tag_set', 'serve', '--signature_def', 'serving_default',
            '--input_exprs', f'images={{small}}', '--outdir', {str(root / 'cli')!r}, '--overwrite')
        sig = tf.saved_model.load({str(path)!r}).signatures['serving_default']
        out = sig(images=tf.constant(np.load({str(root / 'x.npy')!r})))
        np.save({str(root / 'p.npy')!r}, out['probabilities'].numpy())
        np.save({str(root / 'l.npy')!r}, out['labels'].numpy())
        try:
            sig(images=tf.zeros((1, 48, 64, 1)))
            print('NO ERROR')
        except tf.errors.InvalidArgumentError as e:
            print('REFUSED', 'multiple of 32' in str(e))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "inputs['images']" in proc.stdout and "outputs['probabilities']" in proc.stdout
    assert "shape: (-1, -1, -1, 1)" in proc.stdout
    np.testing.assert_allclose(np.load(root / "cli" / "probabilities.npy"), ref, atol=1e-5)
    np.testing.assert_array_equal(np.load(root / "cli" / "labels.npy"), np.argmax(ref, -1))
    assert "REFUSED True" in proc.stdout
    p = np.load(root / "p.npy")
    lab = np.load(root / "l.npy")
    assert p.shape == (3, 64, 96, 3) and p.dtype == np.float32
    assert lab.shape == (3, 64, 96) and lab.dtype == np.int32
    np.testing.assert_allclose(p, probs, atol=1e-5)
    np.testing.assert_array_equal(lab, labels)


def test_in_process_predictor_and_segmentation_agree(exported, tmp_path):
    from evaluation import inference, segment

    root, path, x, probs, labels, model = exported
    loaded, dataset = load_model(str(root / "plc"))  # base folder -> latest version
    assert dataset == "synthetic"
    np.testing.assert_allclose(loaded(x), probs, atol=1e-5)
    ed.write_raw(tmp_path / "in.nii.gz", seed=1)
    cfg = configs.get_config("synthetic")
    a = segment.segment_file(inference.as_predictor(model), cfg, tmp_path / "in.nii.gz", tmp_path / "a.nii.gz")
    b = segment.segment_file(loaded, cfg, tmp_path / "in.nii.gz", tmp_path / "b.nii.gz")
    assert a.shape == (45, 52, 3) and len(np.unique(a)) > 1
    np.testing.assert_array_equal(a, b)

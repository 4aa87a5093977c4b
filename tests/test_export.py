"""SavedModel export: reload in a fresh process without the project, saved_model_cli show / run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

import configs

from common.errors import InputError
from evaluation import export
from tests import _eval_data as ed
from workdir import latest_version, load_model

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
REPO = Path(__file__).resolve().parents[1]


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
    assert meta["signatures"] == ["serving_default", "segment_volume"]
    assert meta["segment_volume"]["n4"] is False
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
    assert "signature_def['segment_volume']" in proc.stdout  # both signatures in one SavedModel
    assert "inputs['image']" in proc.stdout and "inputs['spacing']" in proc.stdout
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


# (H0, W0, D), in-plane spacing (mm) against the synthetic config's 64 x 64 at 2.5 mm: pad both
# axes, small, crop H / pad W without resampling, crop both with one slice, pad H / crop W with
# more slices than one chunk of 20
VOLUMES = [((50, 56, 3), (3.0, 2.8)), ((45, 52, 2), (1.3, 1.9)), ((97, 33, 4), (2.5, 2.5)),
           ((140, 120, 1), (1.6, 1.45)), ((61, 75, 23), (2.0, 2.2))]


def test_segment_volume_fresh_process_agrees_with_predict_py(exported, tmp_path):
    """``segment_volume`` through ``tf.saved_model.load`` in a process that does not import the
    project, and through ``saved_model_cli run`` (TF Serving's session loader), against the labels
    ``predict.py`` writes for the same raw NIfTI files (N4 off: it is not in the graph).

    Tolerance: >= 99.9 % of voxels. Both compute the same float64 formulas, but in another order
    (matrix products instead of scikit-image's 2-tap sums; the network in a different graph), so the
    probabilities differ by ~1e-7 and a label can flip only where two classes tie to that precision.
    """
    root, path, *_ = exported
    (tmp_path / "in").mkdir()
    files = []
    for k, (shape, spacing) in enumerate(VOLUMES):
        image, _, affine = ed.raw_volume(k, shape=shape, spacing=spacing + (8.0,))
        image = image * 700.0 + np.random.default_rng(k).normal(60.0, 15.0, shape)  # scanner-like
        name = f"vol{k}.nii.gz"
        ed.nifti(image.astype(np.float32), affine, np.float32).to_filename(str(tmp_path / "in" / name))
        files.append(name)
    np.save(tmp_path / "vol.npy", np.zeros((2, 30, 40), np.float32) + np.arange(40, dtype=np.float32))
    np.save(tmp_path / "sp.npy", np.array([2.0, 3.0], np.float32))
    pred = subprocess.run([sys.executable, str(REPO / "predict.py"), f"--model={root / 'plc'}", "--n4=false",
                           f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'ref'}"],
                          cwd=REPO, capture_output=True, text=True, env=ENV, timeout=300)
    assert pred.returncode == 0, pred.stderr[-3000:]
    script = textwrap.dedent(f"""
        import sys, nibabel as nib, numpy as np, tensorflow as tf
        from tensorflow.python.tools.saved_model_cli import main as saved_model_cli
        sys.argv = ['saved_model_cli', 'run', '--dir', {str(path)!r}, '--tag_set', 'serve',
                    '--signature_def', 'segment_volume', '--outdir', {str(tmp_path / 'cli')!r},
                    '--inputs', 'image={tmp_path / 'vol.npy'};spacing={tmp_path / 'sp.npy'}']
        try:
            saved_model_cli()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        sig = tf.saved_model.load({str(path)!r}).signatures['segment_volume']
        for name in {files!r}:
            img = nib.load({str(tmp_path / 'in')!r} + '/' + name)
            volume = np.transpose(np.asarray(img.dataobj, np.float32), (2, 0, 1))  # (D, H0, W0)
            out = sig(image=tf.constant(volume), spacing=tf.constant(img.header.get_zooms()[:2], tf.float32))
            np.save({str(tmp_path)!r} + '/' + name + '.npy', np.transpose(out['labels'].numpy(), (1, 2, 0)))
            print(name, out['labels'].dtype.name, out['probabilities'].shape, out['probabilities'].dtype.name)
        for bad, spacing in [(np.full((2, 30, 30), 5.0), [2.0, 2.0]), (np.ones((2, 30, 30)), [-1.0, 2.0])]:
            try:
                sig(image=tf.constant(bad, tf.float32), spacing=tf.constant(spacing, tf.float32))
                print('NO ERROR')
            except tf.errors.InvalidArgumentError as e:
                print('REFUSED', 'constant' in str(e) or 'positive' in str(e))
        print('PROJECT IMPORTED', [m for m in sys.modules if m.split('.')[0] in
                                    ('evaluation', 'models', 'data', 'configs', 'training', 'losses')])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PROJECT IMPORTED []" in proc.stdout
    assert proc.stdout.count("REFUSED True") == 2 and "NO ERROR" not in proc.stdout
    cli = np.load(tmp_path / "cli" / "labels.npy")  # the session loader ran the whole pipeline
    assert cli.shape == (2, 30, 40) and cli.dtype == np.int32
    same = total = 0
    for name, (shape, _) in zip(files, VOLUMES):
        assert f"{name} int32 ({shape[2]}, {shape[0]}, {shape[1]}, 3) float32" in proc.stdout
        ref = np.asarray(nib.load(str(tmp_path / "ref" / name)).dataobj)  # (H0, W0, D) from predict.py
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == ref.shape == shape
        assert len(np.unique(ref)) > 1  # not a constant segmentation
        same += int((got == ref).sum())
        total += ref.size
    print(f"segment_volume vs predict.py: {same}/{total} voxels agree")
    assert same / total >= 0.999, (same, total)


def test_segment_volume_needs_the_dataset_geometry_and_says_so(tmp_path):
    assert export.volume_geometry({"dataset": "acdc"}) == ((192, 192), (1.36719, 1.36719))
    assert export.volume_geometry({"image_size": [64, 96], "target_resolution": [2, 3]}) == ((64, 96), (2.0, 3.0))
    assert export.volume_geometry({}) is None  # unknown dataset: serving_default only
    with pytest.raises(InputError, match="multiples of 32"):
        export.volume_geometry({"image_size": [60, 64], "target_resolution": [1, 1]})
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / export.METADATA_PATH).write_text(json.dumps({"signatures": ["serving_default"]}))
    assert "'segment_volume' not exported: dataset unknown (pass --dataset)" in export.describe_signatures(tmp_path)
    (tmp_path / export.METADATA_PATH).write_text(json.dumps(
        {"signatures": ["serving_default", "segment_volume"], "n4": True}))
    text = export.describe_signatures(tmp_path)
    assert "'segment_volume' (image (D,H0,W0)" in text and "does not apply N4" in text

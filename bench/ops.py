"""Per-op times of ours (TensorFlow) and the PyTorch peer on the UNet's layer shapes (the ``ops`` section).

Where does our training step win or lose against the peer? This section times, on the UNet's real
layer shapes at 192x192 (batches 20 and 40; :data:`SHAPES`), each piece of a conv block and the
whole steps, for ours and for the peer, interleaved op by op so that the load of a shared machine
hits both alike:

* ``conv_fwd``, ``conv_bwd_input``, ``conv_bwd_filter``: the convolution and its two gradients
  (TF: ``Conv2D`` / ``Conv2DBackpropInput`` / ``Conv2DBackpropFilter`` on NHWC; ours also on NCHW,
  ``*_nchw``, and the forward under XLA, ``conv_fwd_xla``; peer: ``F.conv2d`` and
  ``aten.convolution_backward`` on NCHW);
* ``bn_fwd_bwd`` (our :class:`models.batchnorm.BatchNorm`, the fused kernel) and
  ``bn_keras_fwd_bwd`` (``keras.layers.BatchNormalization``) against the peer's ``F.batch_norm``;
  ``relu_fwd_bwd`` and ``bias_add_fwd_bwd`` (element-wise, forward + backward); these act on the
  conv's output (``c_out`` channels);
* ``block_fwd`` (also ``block_fwd_xla``, ``block_fwd_keras_bn``) and ``block_fwd_bwd`` (also
  ``block_fwd_bwd_keras_bn``): the project's conv block (``models.unet.conv_block``) against the
  peer's ``cbr``;
* ``step``: our baseline step (20 images) and PLC joint step (40 images) with the fused and with
  Keras's BN, against the peer's step on 20 and 40 images (``bench.training``'s configurations).

Ours runs in three worker processes, because oneDNN's switch is read when TensorFlow is imported:
``ours_onednn`` (``TF_ENABLE_ONEDNN_OPTS=1``, TensorFlow's default thread pools: every op above),
``ours_eigen`` (``TF_ENABLE_ONEDNN_OPTS=0``) and ``ours_onednn_threads`` (oneDNN, explicit pools:
intra-op = the usable CPUs, inter-op = 1); the last two time the NHWC convolutions, BN, element-wise
ops and ``block_fwd_bwd``, the threads worker also the baseline step. The peer runs in
``bench.peer_ops`` with the peer's Python. Every worker reports its thread settings. With ``probe``
(default on) one more pass with ``ONEDNN_VERBOSE=1`` records which oneDNN kernels and memory formats
ours and the peer run for each op at the first batch (``"kernels"``; with the reorders and their
milliseconds).

The JSON: ``"seconds"`` (median per op group and member, ``worker:op``), ``"seconds_min"``,
``"ours_vs_peer"`` (peer seconds / our seconds: > 1 means we are faster, as ``bench.training``'s
ratios; ``"ours_vs_peer_min"`` the same of the fastest calls, steadier on a loaded machine),
``"totals"`` / ``"ours_vs_peer_totals"`` (summed over the shapes per op and batch), ``"workers"``
(versions and threads of each worker), ``"kernels"`` and ``"cpu"`` (:func:`bench.cpu_info.cpu_info`,
with the machine kind). Absolute times on a shared machine are noisy; the ratios, timed interleaved,
are the numbers to compare.

Each op is built and run once untimed, then timed in ``rounds`` interleaved rounds of ``reps``
calls (steps: ``step_rounds`` rounds of one call); ``"load_average"`` gives the machine's 1-minute
load at the start of each group. The peer's OpenMP threads suffer more than TensorFlow's thread
pool when another process holds a core (its fixed cost per op grows to milliseconds), so on a
loaded machine the ratios flatter ours.

Usage: ``python -m bench.ops [--quick] [--peer_python PATH] [--rounds N] [--reps N] [--step_rounds N]
[--no_probe] [--no_steps] [--variants ours_onednn,...] [--groups step/,bn_fwd_bwd/...]``,
or ``python -m bench.training --sections ops --peer_python PATH``. ``--quick``: tiny shapes and
steps (seconds; the test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent

# name -> (size, c_in, c_out, kernel): the first encoder conv, a full-resolution 16-channel conv (as
# enc_c1_b, seg_c1_a/b), a middle level and the bottleneck of the UNet at 192x192.
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "enc_c1_a": (192, 1, 16, 3), "enc_c1_b": (192, 16, 16, 3), "enc_c3_b": (48, 64, 64, 3),
    "enc_c6_b": (6, 128, 128, 3)}
QUICK_SHAPES: dict[str, tuple[int, int, int, int]] = {"enc_c1_b": (16, 4, 4, 3)}
BATCHES = (20, 40)
QUICK_BATCHES = (2,)
STEP_SIZE, QUICK_STEP_SIZE = 192, 32

# peer op -> our ops compared with it, per worker
OPS_FULL: dict[str, tuple[str, ...]] = {
    "conv_fwd": ("conv_fwd", "conv_fwd_nchw", "conv_fwd_xla"),
    "conv_bwd_input": ("conv_bwd_input", "conv_bwd_input_nchw"),
    "conv_bwd_filter": ("conv_bwd_filter", "conv_bwd_filter_nchw"),
    "bn_fwd_bwd": ("bn_fwd_bwd", "bn_keras_fwd_bwd"),
    "relu_fwd_bwd": ("relu_fwd_bwd",),
    "bias_add_fwd_bwd": ("bias_add_fwd_bwd",),
    "block_fwd": ("block_fwd", "block_fwd_xla", "block_fwd_keras_bn"),
    "block_fwd_bwd": ("block_fwd_bwd", "block_fwd_bwd_keras_bn"),
}
OPS_BASIC: dict[str, tuple[str, ...]] = {
    "conv_fwd": ("conv_fwd",), "conv_bwd_input": ("conv_bwd_input",), "conv_bwd_filter": ("conv_bwd_filter",),
    "bn_fwd_bwd": ("bn_fwd_bwd", "bn_keras_fwd_bwd"), "relu_fwd_bwd": ("relu_fwd_bwd",),
    "bias_add_fwd_bwd": ("bias_add_fwd_bwd",), "block_fwd_bwd": ("block_fwd_bwd",)}
# our step ops per peer batch: 20 -> baseline step, 40 -> joint step
STEPS_FULL = {20: ("step_baseline", "step_baseline_keras_bn"), 40: ("step_joint", "step_joint_keras_bn")}
STEPS_THREADS = {20: ("step_baseline",)}  # the explicit-threads worker; oneDNN off is left out of the steps
QUICK_STEPS_FULL = {2: ("step_baseline",)}
QUICK_STEPS_THREADS: dict[int, tuple[str, ...]] = {}
ELEMENTWISE = ("bn_fwd_bwd", "relu_fwd_bwd", "bias_add_fwd_bwd")  # act on (batch, size, size, cout) only
PROBE_OPS = ("conv_fwd", "conv_bwd_input", "conv_bwd_filter", "bn_fwd_bwd", "relu_fwd_bwd", "block_fwd_bwd")


def ours_workers(cpus: int) -> dict[str, dict[str, Any]]:
    """Our worker variants: environment, thread pools (``None``: TensorFlow's defaults) and what they time."""
    return {
        "ours_onednn": {"env": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "threads": None, "full": True, "steps": True},
        "ours_eigen": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "threads": None, "full": False, "steps": False},
        "ours_onednn_threads": {"env": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "threads": (cpus, 1), "full": False,
                                "steps": True},
    }


# ---------------------------------------------------------------------------------------------------
# Our worker (TensorFlow): python -m bench.ops --worker [--intra N --inter M]


def _tf_op(spec: dict[str, Any]) -> Callable[[], Any]:
    import numpy as np
    import tensorflow as tf

    from models.batchnorm import BatchNorm

    op = spec["op"]
    if op.startswith("step_"):
        return _tf_step(op, spec["batch"], spec["size"])
    b, s, cin, cout, k = (spec[n] for n in ("batch", "size", "cin", "cout", "kernel"))
    rng = np.random.default_rng(0)

    def rand(*shape):
        return tf.constant(rng.standard_normal(shape), tf.float32)

    def pulled(fn):
        return lambda: tf.nest.map_structure(np.asarray, fn())

    xla = op.endswith("_xla")
    base = op.removesuffix("_xla").removesuffix("_nchw")
    if base.startswith("conv_"):
        fmt = "NCHW" if op.endswith("_nchw") else "NHWC"
        x = rand(b, cin, s, s) if fmt == "NCHW" else rand(b, s, s, cin)
        dy = rand(b, cout, s, s) if fmt == "NCHW" else rand(b, s, s, cout)
        w = rand(k, k, cin, cout) * 0.1  # HWIO
        conv = {"conv_fwd": lambda: tf.nn.conv2d(x, w, 1, "SAME", data_format=fmt),
                "conv_bwd_input": lambda: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME",
                    data_format=fmt),
                "conv_bwd_filter": lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME",
                    data_format=fmt)}[base]
        fn = pulled(tf.function(conv, jit_compile=xla or None))
        if fmt == "NCHW":
            try:
                fn()
            except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as e:
                from bench.op_worker import Unsupported
                raise Unsupported(f"NCHW on this CPU build: {e.message.splitlines()[0][:200]}") from None
        return fn
    if base in ("bn_fwd_bwd", "bn_keras_fwd_bwd", "relu_fwd_bwd", "bias_add_fwd_bwd"):
        x, dx = rand(b, s, s, cout), rand(b, s, s, cout)  # the conv's output, where BN, ReLU and bias act
        layer = BatchNorm(momentum=0.99, epsilon=1e-3, fused=base == "bn_fwd_bwd")
        layer.build(x.shape)
        bias = tf.Variable(tf.zeros(cout))
        fwd, variables = {"bn_fwd_bwd": (lambda: layer(x, training=True), layer.trainable_variables),
                          "bn_keras_fwd_bwd": (lambda: layer(x, training=True), layer.trainable_variables),
                          "relu_fwd_bwd": (lambda: tf.nn.relu(x), []),
                          "bias_add_fwd_bwd": (lambda: x + tf.reshape(bias, (1, 1, 1, -1)), [bias])}[base]
        return pulled(tf.function(lambda: _tf_grads(fwd, x, variables, dx)))
    x = rand(b, s, s, cin)  # (B, H, W, C_in)
    if base.startswith("block_"):
        import keras

        from models.batchnorm import set_fused_bn
        from models.unet import conv_block

        inp = keras.Input((s, s, cin))
        block = keras.Model(inp, conv_block(inp, "blk", cout, kernel=k))
        set_fused_bn(block, not op.endswith("_keras_bn"))
        if base.removesuffix("_keras_bn") == "block_fwd":
            return pulled(tf.function(lambda: block(x, training=True), jit_compile=xla or None))
        dy = rand(b, s, s, cout)
        return pulled(tf.function(lambda: _tf_grads(lambda: block(x, training=True), x, block.trainable_variables,
                                                    dy)))
    from bench.op_worker import Unsupported
    raise Unsupported(f"no op {op!r}")


def _tf_grads(fwd: Callable[[], Any], x: Any, variables: Sequence[Any], dy: Any) -> list[Any]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fwd()
    return tape.gradient(y, [x, *variables], output_gradients=dy)


def _tf_step(op: str, batch: int, size: int) -> Callable[[], Any]:
    import numpy as np

    from bench import step_fixtures as bt
    from models.batchnorm import set_fused_bn
    from models.heads import build_h
    from models.unet import build_unet

    rng = np.random.default_rng(0)
    unet, h = build_unet(bt.C, (size, size)), build_h()
    fused = not op.endswith("_keras_bn")
    set_fused_bn(unet, fused), set_fused_bn(h, fused)
    if op.removesuffix("_keras_bn") == "step_baseline":
        step = bt.make_baseline_step(unet, jit=False)
        x, y = bt.labeled_batch(rng, batch, size)
        return lambda: float(step((x, y))[0])
    step = bt.make_joint_step(unet, h, jit=False)
    unit = bt.joint_unit(rng, size)  # 20 labeled + 20 contrastive images, whatever ``batch`` says
    return lambda: float(step(unit)[0])


def _tf_worker(intra: int | None, inter: int | None) -> None:
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from bench.op_worker import serve
    from bench.step_breakdown import thread_settings

    if intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    hello = {"library": "tensorflow", "version": tf.__version__, "layout": "NHWC",
             "onednn": bool(_pywrap_util_port.IsMklEnabled()), "threads": thread_settings()}
    serve(_tf_op, hello)


# ---------------------------------------------------------------------------------------------------
# The parent: starts the workers, sends them the ops interleaved, collects the JSON.


class Worker:
    """One worker process, spoken to over its standard input / output (``bench.op_worker``).

    A worker that does not answer within ``timeout_s`` (its start, or one request) is killed; the
    request then gets an ``error`` reply and later ones too.
    """

    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], timeout_s: float):
        self.name, self.timeout_s = name, timeout_s
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, env=dict(env), cwd=REPO, bufsize=1)
        self.hello = self._read().get("hello")
        if self.hello is None:
            tail = self.stderr_tail()
            self.close()
            raise RuntimeError(f"worker {name} did not start: {tail}")

    def _read(self) -> dict[str, Any]:
        watchdog = threading.Timer(self.timeout_s, self.proc.kill)
        watchdog.start()
        try:
            for line in self.proc.stdout:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return obj
            return {}
        finally:
            watchdog.cancel()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the reply (``{"error": ...}`` if the worker died)."""
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return {"error": f"worker {self.name} is gone: {self.stderr_tail()}"}
        reply = self._read()
        return reply or {"error": f"worker {self.name} exited: {self.stderr_tail()}"}

    def stderr_tail(self) -> str:
        if self._log.closed:
            return ""
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"exit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def plan(shapes: Mapping[str, tuple[int, int, int, int]], batches: Sequence[int],
         steps_full: Mapping[int, Sequence[str]], steps_threads: Mapping[int, Sequence[str]], step_size: int,
         workers: Mapping[str, Mapping[str, Any]], peer: bool) -> list[dict[str, Any]]:
    """The op groups to time: ``[{"key", "spec", "members": [(worker, op)]}]``, the peer last in each.

    The :data:`ELEMENTWISE` ops of a shape whose ``(size, cout)`` an earlier shape had are left out
    (the same tensor). Step groups: ``steps_full`` for full workers, ``steps_threads`` for the others
    that time steps.
    """
    groups = []
    for batch in batches:
        seen: set[tuple[int, int]] = set()
        for shape, (size, cin, cout, k) in shapes.items():
            spec = {"batch": batch, "size": size, "cin": cin, "cout": cout, "kernel": k}
            for peer_op in OPS_FULL:
                if peer_op in ELEMENTWISE and (size, cout) in seen:
                    continue
                members = [(w, op) for w, cfg in workers.items()
                           for op in (OPS_FULL if cfg["full"] else OPS_BASIC).get(peer_op, ())]
                groups.append({"key": f"{peer_op}/{shape}/b{batch}", "spec": spec,
                               "members": members + ([("peer", peer_op)] if peer else [])})
            seen.add((size, cout))
    for batch, ops in steps_full.items():
        members = [(w, op) for w, cfg in workers.items() if cfg["steps"]
                   for op in (ops if cfg["full"] else steps_threads.get(batch, ()))]
        groups.append({"key": f"step/b{batch}x{step_size}", "spec": {"batch": batch, "size": step_size},
                       "members": members + ([("peer", "step")] if peer else [])})
    return groups


def time_groups(groups: Sequence[Mapping[str, Any]], workers: Mapping[str, Worker], rounds: int, reps: int,
                step_rounds: int | None = None, log: Callable[[str], None] | None = None
                ) -> tuple[dict, dict, dict, dict]:
    """Time every member of every group: ``rounds`` rounds, each member ``reps`` calls per round
    (step groups: ``step_rounds`` rounds of one call).

    The members of a group run one after another in each round, starting from a member that
    rotates from round to round; a group's ops are dropped by the workers before the next group.

    Returns:
        ``(median seconds, fastest seconds, problems, load)``: the first three
        ``{group key: {"worker:op": value}}`` (``problems``: the ``unsupported`` / ``error`` message
        of members that did not run), ``load``: ``{group key: 1-minute load average at its start}``.
    """
    med: dict[str, dict[str, float]] = {}
    fastest: dict[str, dict[str, float]] = {}
    problems: dict[str, dict[str, str]] = {}
    load: dict[str, float] = {}
    for g in groups:
        members = list(g["members"])
        is_step = g["key"].startswith("step/")
        n = 1 if is_step else reps
        times: dict[str, list[float]] = {f"{w}:{op}": [] for w, op in members}
        bad: dict[str, str] = {}
        if hasattr(os, "getloadavg"):
            load[g["key"]] = round(os.getloadavg()[0], 2)
        for r in range((step_rounds or rounds) if is_step else rounds):
            for w, op in members[r % len(members):] + members[:r % len(members)]:
                label = f"{w}:{op}"
                if label in bad:
                    continue
                reply = workers[w].ask({"key": f"{op}/{g['key']}", "spec": {**g["spec"], "op": op}, "reps": n})
                if "times" in reply:
                    times[label] += reply["times"]
                else:
                    bad[label] = reply.get("unsupported") or reply.get("error") or "no reply"
        for w in {w for w, _ in members}:
            workers[w].ask({"clear": True})
        med[g["key"]] = {k: statistics.median(v) for k, v in times.items() if v}
        fastest[g["key"]] = {k: min(v) for k, v in times.items() if v}
        if bad:
            problems[g["key"]] = bad
        if log:
            log(f"{g['key']} (load {load.get(g['key'])}): "
                + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med[g["key"]].items()))
    return med, fastest, problems, load


def ratios(seconds: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Peer seconds / our seconds per group and member of ours (> 1: we are faster)."""
    out = {}
    for key, members in seconds.items():
        peer = next((v for k, v in members.items() if k.startswith("peer:")), None)
        if peer is None:
            continue
        out[key] = {k: peer / v for k, v in members.items() if not k.startswith("peer:") and v > 0}
    return out


def totals(seconds: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Seconds summed over the shapes: ``{"<peer op>/b<batch>": {member: sum}}`` (members timed on every shape)."""
    out: dict[str, dict[str, float]] = {}
    count: dict[str, int] = {}
    per_member: dict[str, dict[str, int]] = {}
    for key, members in seconds.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] == "step":
            continue
        tkey = f"{parts[0]}/{parts[2]}"
        count[tkey] = count.get(tkey, 0) + 1
        for m, v in members.items():
            out.setdefault(tkey, {})[m] = out.get(tkey, {}).get(m, 0.0) + v
            per_member.setdefault(tkey, {})[m] = per_member.get(tkey, {}).get(m, 0) + 1
    return {k: {m: v for m, v in ms.items() if per_member[k][m] == count[k]} for k, ms in out.items()}


def parse_verbose(lines: Sequence[str]) -> list[dict[str, Any]]:
    """oneDNN ``exec`` verbose lines grouped by (primitive, implementation, propagation, formats, aux).

    Returns:
        ``[{"primitive", "impl", "prop", "formats", "aux", "problem", "count", "ms"}]`` in first-seen
        order (``aux``: oneDNN's auxiliary field of the v1 format, e.g. ``flags:CHR`` for a batch norm
        with the ReLU fused, ``alg:convolution_direct``; ``ms``: summed execution time oneDNN reported).
    """
    out: dict[tuple, dict[str, Any]] = {}
    for line in lines:
        f = line.split(",")
        if "exec" not in f:
            continue
        i = f.index("exec")
        if len(f) < i + 6:
            continue
        aux = f[i + 7] if len(f) > i + 9 else ""  # e.g. "flags:CHR" (R: ReLU fused into BN)
        key = (f[i + 2], f[i + 3], f[i + 4], f[i + 5], aux)
        entry = out.setdefault(key, {"primitive": f[i + 2], "impl": f[i + 3], "prop": f[i + 4],
                                     "formats": f[i + 5], "aux": aux, "problem": f[-2], "count": 0, "ms": 0.0})
        entry["count"] += 1
        try:
            entry["ms"] += float(f[-1])
        except ValueError:
            pass
    return list(out.values())


def probe_kernels(groups: Sequence[Mapping[str, Any]], worker: Worker, name: str, batch: int) -> dict[str, Any]:
    """The oneDNN kernels ``worker`` (started with ``ONEDNN_VERBOSE=1``) runs per op at ``batch``.

    Returns:
        ``{"info": oneDNN's first info lines (version, threading runtime, ISA),
        "ops": {group key: {op: parse_verbose(...) or the worker's error reply}}}``.
    """
    kernels: dict[str, Any] = {}
    info: list[str] = []
    for g in groups:
        if g["key"].startswith("step/") or g["spec"].get("batch") != batch:
            continue
        for w, op in g["members"]:
            if w != name or op not in PROBE_OPS:
                continue
            reply = worker.ask({"key": f"probe/{op}/{g['key']}", "spec": {**g["spec"], "op": op}, "probe": True})
            info = info or [ln.split(",info,", 1)[-1] for ln in reply.get("info", []) if ",info," in ln][:3]
            kernels.setdefault(g["key"], {})[op] = parse_verbose(reply["verbose"]) if "verbose" in reply else reply
        worker.ask({"clear": True})
    return {"info": info, "ops": kernels}


def _start(name: str, cfg: Mapping[str, Any] | None, peer_python: str | None, peer_script: str | None,
           extra_env: Mapping[str, str], timeout_s: float) -> Worker:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **extra_env}
    if name == "peer":
        cmd = [peer_python, "-m", "bench.peer_ops"] + (["--peer_script", peer_script] if peer_script else [])
        return Worker(name, cmd, env, timeout_s)
    cmd = [sys.executable, "-m", "bench.ops", "--worker"]
    if cfg["threads"] is not None:
        cmd += ["--intra", str(cfg["threads"][0]), "--inter", str(cfg["threads"][1])]
    return Worker(name, cmd, {**env, **cfg["env"]}, timeout_s)


def bench_ops(peer_python: str | None = None, peer_script: str | None = None, quick: bool = False,
              rounds: int = 3, reps: int = 1, step_rounds: int = 4, probe: bool = True,
              variants: Sequence[str] | None = None, steps: bool = True, groups: Sequence[str] | None = None,
              timeout_s: float = 600.0,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the ``ops`` section (see module docstring) and return its JSON object.

    Args:
        peer_python: the peer venv's Python; ``None``: ours only, no ratios.
        peer_script: the peer script for the block and step ops (default: ``bench.peer_ops``'s).
        quick: tiny shapes, batch 2, 32x32 steps.
        rounds: interleaved rounds per op group.
        reps: calls per member and round (steps: one).
        step_rounds: interleaved rounds of the step groups.
        probe: also record the oneDNN kernels (``ONEDNN_VERBOSE=1`` workers, first batch).
        variants: our workers to run (default: all of :func:`ours_workers`).
        steps: also time the whole steps (the ``step`` groups).
        groups: only the op groups whose key starts with one of these (e.g. ``("step/", "bn_")``).
        timeout_s: time limit of a worker's start and of each of its replies.
        log: called with one line per finished op group (progress).
    """
    from bench.cpu_info import cpu_info

    cpu = cpu_info()
    usable = cpu["usable_cpus"] or 1
    cfgs = {k: v for k, v in ours_workers(usable).items() if variants is None or k in variants}
    shapes, batches = (QUICK_SHAPES, QUICK_BATCHES) if quick else (SHAPES, BATCHES)
    steps_full, steps_threads = (QUICK_STEPS_FULL, QUICK_STEPS_THREADS) if quick else (STEPS_FULL, STEPS_THREADS)
    step_size = QUICK_STEP_SIZE if quick else STEP_SIZE
    if not steps:
        steps_full = steps_threads = {}
    prefixes = tuple(groups or ("",))
    groups = [g for g in plan(shapes, batches, steps_full, steps_threads, step_size, cfgs, peer_python is not None)
              if g["key"].startswith(prefixes)]
    result: dict[str, Any] = {"cpu": cpu, "kind": cpu["kind"], "quick": quick, "rounds": rounds, "reps": reps,
                              "step_rounds": step_rounds,
                              "shapes": {k: dict(zip(("size", "cin", "cout", "kernel"), v)) for k, v in shapes.items()},
                              "batches": list(batches), "step_size": step_size}
    used = {w for g in groups for w, _ in g["members"]}
    names = [n for n in list(cfgs) + ["peer"] if n in used]  # only the workers some group needs
    workers: dict[str, Worker] = {}
    try:
        for name in names:
            workers[name] = _start(name, cfgs.get(name), peer_python, peer_script, {}, timeout_s)
        result["workers"] = {name: w.hello for name, w in workers.items()}
        med, fastest, problems, load = time_groups(groups, workers, rounds, reps, step_rounds, log=log)
    finally:
        for w in workers.values():
            w.close()
    result.update({"seconds": med, "seconds_min": fastest, "not_run": problems, "load_average": load,
                   "ours_vs_peer": ratios(med), "ours_vs_peer_min": ratios(fastest), "totals": totals(med)})
    result["ours_vs_peer_totals"] = ratios(result["totals"])
    if probe and any(not g["key"].startswith("step/") for g in groups):
        result["kernels"] = {}
        for name in [n for n in ("ours_onednn", "peer") if n in names]:
            w = _start(name, cfgs.get(name), peer_python, peer_script, {"ONEDNN_VERBOSE": "1"}, timeout_s)
            try:
                result["kernels"][name] = probe_kernels(groups, w, name, batches[0])
            finally:
                w.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--peer_python", default=None, help="Python of a venv with torch (the peer)")
    parser.add_argument("--peer_script", default=None, help="the peer script (default: shared/bench/peer_torch.py)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--step_rounds", type=int, default=4)
    parser.add_argument("--no_probe", action="store_true", help="skip the ONEDNN_VERBOSE kernel probe")
    parser.add_argument("--no_steps", action="store_true", help="skip the whole-step groups")
    parser.add_argument("--groups", default=None, help="comma-separated key prefixes of the op groups to run")
    parser.add_argument("--variants", default=None, help="comma-separated subset of our workers")
    args = parser.parse_args()
    if args.worker:
        _tf_worker(args.intra, args.inter)
        return
    variants = args.variants.split(",") if args.variants else None
    r = bench_ops(args.peer_python, args.peer_script, args.quick, args.rounds, args.reps, args.step_rounds,
                  not args.no_probe, variants, not args.no_steps, args.groups.split(",") if args.groups else None,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()

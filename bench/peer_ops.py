"""The peer's timing worker of ``bench.ops``: the same ops on the same shapes in PyTorch (NCHW, as torch does).

Run with the peer's Python (a venv with torch 2.13; torch is never a dependency of this project),
from the repository root: ``PEER_PYTHON -m bench.peer_ops [--peer_script shared/bench/peer_torch.py]``.
It answers the requests of ``bench.op_worker`` (the parent is ``bench.ops``). Ops (``spec["op"]``;
``batch``, ``size``, ``cin``, ``cout``, ``kernel`` give the shapes):

* ``conv_fwd``, ``conv_bwd_input``, ``conv_bwd_filter``: ``F.conv2d`` without bias (no autograd)
  and ``aten.convolution_backward`` for the input / the weight alone;
* ``bn_fwd_bwd``: ``F.batch_norm`` in training mode (momentum 0.01, eps 1e-3), forward + backward
  to the input, weight and bias; ``relu_fwd_bwd``; ``bias_add_fwd_bwd`` (``x + b``); all three on a
  ``(batch, cout, size, size)`` tensor (the conv's output);
* ``block_fwd``, ``block_fwd_bwd``: the peer's conv block (``cbr`` of ``peer_torch.py``: conv with
  bias, BN, ReLU) in training mode, forward / forward + backward to the input and every weight;
* ``step``: the peer's training step (``ChaitanyaUNet``, ``dice_ce``, Adam) on ``batch`` images,
  exactly the loop body of ``peer_torch.py``.

Block and step ops import ``--peer_script`` (not modified); the other ops need only torch.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F

from bench.op_worker import Unsupported, serve
from bench.peer import DEFAULT_PEER_SCRIPT


def _load_peer(path: str | os.PathLike):
    spec = importlib.util.spec_from_file_location("peer_torch", os.fspath(path))
    if spec is None or spec.loader is None:
        raise Unsupported(f"no peer script at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grad_step(y: torch.Tensor, dy: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    y.backward(dy)
    for t in leaves:
        t.grad = None


def build_op(spec: dict[str, Any], peer_script: str | os.PathLike) -> Callable[[], Any]:
    """``fn()`` running the op of ``spec`` once (see module docstring)."""
    op = spec["op"]
    torch.manual_seed(0)
    if op == "step":
        peer = _load_peer(peer_script)
        model = peer.ChaitanyaUNet()
        opt = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-8)
        x = torch.randn(spec["batch"], 1, spec["size"], spec["size"])
        y = torch.randint(0, 4, (spec["batch"], spec["size"], spec["size"]))
        model.train()

        def step():
            opt.zero_grad()
            peer.dice_ce(model(x), y).backward()
            opt.step()
        return step
    b, s, cin, cout, k = (spec[n] for n in ("batch", "size", "cin", "cout", "kernel"))
    if k % 2 == 0:
        raise Unsupported("even kernels pad asymmetrically (TF SAME); only odd kernels are timed")
    pad = k // 2
    x = torch.randn(b, cin, s, s)  # (B, C_in, H, W)
    dy = torch.randn(b, cout, s, s)  # (B, C_out, H, W)
    w = torch.randn(cout, cin, k, k) * 0.1  # (C_out, C_in, k, k)
    if op == "conv_fwd":
        def conv_fwd():
            with torch.no_grad():
                return F.conv2d(x, w, None, padding=pad)
        return conv_fwd
    if op in ("conv_bwd_input", "conv_bwd_filter"):
        mask = [True, False, False] if op == "conv_bwd_input" else [False, True, False]
        return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [pad, pad], [1, 1], False,
                                                           [0, 0], 1, mask)
    xr = x.clone().requires_grad_()
    if op in ("bn_fwd_bwd", "relu_fwd_bwd", "bias_add_fwd_bwd"):  # on the conv's output (C_out channels)
        xr, dx = dy.clone().requires_grad_(), torch.randn(b, cout, s, s)
        g, beta = torch.ones(cout, requires_grad=True), torch.zeros(cout, requires_grad=True)
        rm, rv = torch.zeros(cout), torch.ones(cout)
        fwd = {"bn_fwd_bwd": lambda: F.batch_norm(xr, rm, rv, g, beta, True, 0.01, 1e-3),
               "relu_fwd_bwd": lambda: F.relu(xr),
               "bias_add_fwd_bwd": lambda: xr + beta.view(1, -1, 1, 1)}[op]
        return lambda: _grad_step(fwd(), dx, [xr, g, beta])
    if op in ("block_fwd", "block_fwd_bwd"):
        block = _load_peer(peer_script).cbr(cin, cout, k)
        block.train()
        if op == "block_fwd":
            def block_fwd():
                with torch.no_grad():
                    return block(x)
            return block_fwd
        return lambda: _grad_step(block(xr), dy, [xr, *block.parameters()])
    raise Unsupported(f"the peer has no op {op!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer_script", default=str(DEFAULT_PEER_SCRIPT))
    args = parser.parse_args()
    hello = {"library": "torch", "version": torch.__version__, "layout": "NCHW",
             "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                         "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                                                            "ONEDNN_MAX_CPU_ISA") if k in os.environ}},
             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "mkldnn": torch.backends.mkldnn.is_available()}
    serve(lambda spec: build_op(spec, args.peer_script), hello)


if __name__ == "__main__":
    main()

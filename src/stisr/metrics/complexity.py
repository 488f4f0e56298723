"""Model size and cost: parameter count, FLOPs/MACs and latency.

FLOPs come from PyTorch's maintained `torch.utils.flop_counter.FlopCounterMode`, which counts
matrix products, convolutions (incl. transposed) and attention at 2 FLOPs per multiply-accumulate;
element-wise ops, normalization and pooling are not counted. Papers (and the `thop` profiler the
TextZoom code imports) usually print MACs under the name "FLOPs": compare `macs` with them.

Recurrent layers: on CPU the fused oneDNN LSTM kernel, and on CUDA the cuDNN RNN kernels, are not
registered with FlopCounterMode and count 0, while other paths (GRU on CPU, LSTM with projections,
packed sequences, cells) decompose into counted matmuls. `count_flops` therefore hooks every
`nn.RNNBase` / `nn.RNNCellBase` module and, only when the counter saw no FLOPs inside that call,
adds the analytic count of the same matmuls the decomposed path performs: per time step, sample,
layer and direction `in*G*H + R*G*H (+ H*P with projections)` MACs, with G = 4 (LSTM), 3 (GRU),
1 (RNN), R = P if proj_size else H. Bias additions and gate non-linearities are not counted,
consistent with the counter.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once); frozen ones too unless trainable_only."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _rnn_steps(module: nn.RNNBase, x: Any) -> int:
    """Number of (time step, sample) pairs the RNN processes for input `x`."""
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.sum())
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(module).__name__} input must be a Tensor or PackedSequence")
    if x.dim() == 2:  # unbatched (T, input_size)
        return x.shape[0]
    return x.shape[0] * x.shape[1]


def recurrent_macs(module: nn.Module, x: Any) -> int:
    """Analytic matmul MACs of one forward call of an RNN/LSTM/GRU (or cell) on input `x`."""
    if isinstance(module, nn.RNNBase):
        gates = _GATES[module.mode]
        hidden, proj = module.hidden_size, module.proj_size
        rec = proj if proj > 0 else hidden
        dirs = 2 if module.bidirectional else 1
        per_step = 0
        for layer in range(module.num_layers):
            inp = module.input_size if layer == 0 else rec * dirs
            per_dir = inp * gates * hidden + rec * gates * hidden + (hidden * proj if proj else 0)
            per_step += per_dir * dirs
        return per_step * _rnn_steps(module, x)
    if isinstance(module, nn.RNNCellBase):
        gates = 4 if isinstance(module, nn.LSTMCell) else 3 if isinstance(module, nn.GRUCell) else 1
        batch = x.shape[0] if x.dim() == 2 else 1
        hidden = module.hidden_size
        return batch * (module.input_size * gates * hidden + hidden * gates * hidden)
    raise TypeError(f"recurrent_macs: {type(module).__name__} is not a recurrent layer")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (no BN statistics updates, no dropout), then restore the flags."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def count_flops(
    model: nn.Module, *inputs: Any, supplement_recurrent: bool = True
) -> dict[str, int]:
    """FLOPs and MACs of one forward pass `model(*inputs)` in eval mode without gradients.

    Returns `flops` (= 2 * `macs`), `macs`, `counted_flops` (what FlopCounterMode saw) and
    `recurrent_flops` (the analytic supplement for recurrent calls the counter missed).
    """
    counter = FlopCounterMode(display=False)
    before: list[int] = []
    extra = [0]

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        before.append(counter.get_total_flops())

    def post_hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        start = before.pop()
        if counter.get_total_flops() == start:
            x = args[0] if args else kwargs["input"]
            extra[0] += 2 * recurrent_macs(module, x)

    handles = []
    if supplement_recurrent:
        for m in model.modules():
            if isinstance(m, nn.RNNBase | nn.RNNCellBase):
                handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
    try:
        with _eval_mode(model), torch.no_grad(), counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    counted = int(counter.get_total_flops())
    flops = counted + extra[0]
    return {
        "flops": flops,
        "macs": flops // 2,
        "counted_flops": counted,
        "recurrent_flops": extra[0],
    }


def _sync(model: nn.Module, inputs: tuple[Any, ...]) -> None:
    """Wait for queued CUDA work so the timer measures the computation, not the launch."""
    devices = {p.device for p in model.parameters()}
    devices |= {x.device for x in inputs if isinstance(x, torch.Tensor)}
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


def measure_latency(
    model: nn.Module, *inputs: Any, warmup: int = 2, repeats: int = 10
) -> dict[str, float]:
    """Wall-clock time of `model(*inputs)` in eval mode under torch.inference_mode.

    Returns `mean_ms` and `std_ms` (sample standard deviation; 0 for one repeat) over `repeats`
    timed calls after `warmup` untimed ones; CUDA is synchronized around each call. Latency
    depends on the batch size of `inputs`, the device and the thread count: report them with it.
    """
    if warmup < 0:
        raise ValueError(f"measure_latency: warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"measure_latency: repeats must be >= 1, got {repeats}")
    times: list[float] = []
    with _eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        _sync(model, inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            _sync(model, inputs)
            times.append((time.perf_counter() - start) * 1000.0)
    std = statistics.stdev(times) if len(times) > 1 else 0.0
    return {"mean_ms": statistics.fmean(times), "std_ms": std}

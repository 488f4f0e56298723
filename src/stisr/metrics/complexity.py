"""Model size and cost: parameter count, FLOPs/MACs and latency.

FLOPs come from PyTorch's maintained `torch.utils.flop_counter.FlopCounterMode`, which counts
matrix products, convolutions (incl. transposed) and attention at 2 FLOPs per multiply-accumulate;
element-wise ops, normalization and pooling are not counted. Papers (and the `thop` profiler the
TextZoom code imports) usually print MACs under the name "FLOPs": compare `macs` with them.

Attention: on CPU, `scaled_dot_product_attention` runs the fused
`aten._scaled_dot_product_flash_attention_for_cpu` and `nn.MultiheadAttention`'s inference fast
path the fused `aten._native_multi_head_attention` (projections included); the counter has no
formula for either and would count 0. `count_flops` therefore disables the fast path and selects
the math SDPA backend while counting, so that attention runs as the same matmuls, which are
counted: 2 * B * heads * L * S * head_dim MACs for QK^T and AV together.

Recurrent layers: on CPU the fused oneDNN LSTM kernel, and on CUDA the cuDNN RNN kernels, are not
registered with FlopCounterMode and count 0, while other paths (GRU on CPU, LSTM with projections,
packed sequences, cells) decompose into counted matmuls. `count_flops` therefore hooks every
`nn.RNNBase` / `nn.RNNCellBase` module and, only when the counter saw no FLOPs inside that call,
adds the analytic count of the same matmuls the decomposed path performs: per time step, sample,
layer and direction `in*G*H + R*G*H (+ H*P with projections)` MACs, with G = 4 (LSTM), 3 (GRU),
1 (RNN), R = P if proj_size else H. Bias additions and gate non-linearities are not counted,
consistent with the counter.

Papers' conventions: module-hook profilers (thop, ptflops) count only modules they have a rule
for, so attention computed functionally is missing from the papers' numbers. `rule_macs` is that
part of the count (`PROFILER_RULES`), and `PAPER_COUNTS` records, per recognizer, the input size,
decoding and rule set its paper used, with the reason.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
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


@contextmanager
def _countable_attention() -> Iterator[None]:
    """Run attention as plain matmuls (math SDPA backend, no MHA fast path) while counting."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


# Module types whose work module-hook profilers (thop, ptflops) count: convolutions, linear and
# recurrent layers. Work done functionally elsewhere, e.g. QK^T and AV of a ViT block
# (torch.matmul) or a vendored MultiheadAttention that applies its weights with F.linear, is
# invisible to them.
PROFILER_RULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.RNNBase,
    nn.RNNCellBase,
)


def count_flops(
    model: nn.Module,
    *inputs: Any,
    supplement_recurrent: bool = True,
    rules: tuple[type[nn.Module], ...] = PROFILER_RULES,
) -> dict[str, int]:
    """FLOPs and MACs of one forward pass `model(*inputs)` in eval mode without gradients.

    Returns `flops` (= 2 * `macs`), `macs` (every counted op), `counted_flops` (what
    FlopCounterMode saw), `recurrent_flops` (the analytic supplement for recurrent calls the
    counter missed) and `rule_macs`: the part of `macs` done inside modules of the `rules` types
    (outermost ones only), i.e. what a module-hook profiler such as thop reports.
    """
    counter = FlopCounterMode(display=False)
    before: list[int] = []
    extra = [0]
    rule_start: list[int] = []
    rule_flops = [0]

    def total() -> int:
        return counter.get_total_flops() + extra[0]

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        before.append(counter.get_total_flops())

    def post_hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        start = before.pop()
        if counter.get_total_flops() == start:
            x = args[0] if args else kwargs["input"]
            extra[0] += 2 * recurrent_macs(module, x)

    def rule_pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        rule_start.append(total())

    def rule_post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        start = rule_start.pop()
        if not rule_start:  # outermost rule module: nested ones are inside its count
            rule_flops[0] += total() - start

    handles = []
    for m in model.modules():
        if supplement_recurrent and isinstance(m, nn.RNNBase | nn.RNNCellBase):
            handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
    # Registered after the supplement's hooks so that a recurrent module's supplement is added
    # before its rule count is closed.
    for m in model.modules():
        if isinstance(m, rules):
            handles.append(m.register_forward_pre_hook(rule_pre))
            handles.append(m.register_forward_hook(rule_post))
    try:
        with _eval_mode(model), torch.no_grad(), _countable_attention(), counter:
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
        "rule_macs": rule_flops[0] // 2,
    }


@dataclass(frozen=True)
class PaperCount:
    """How the papers counted one model: config overrides (input size, decoding) and which ops.

    `profiler_rules`: count only the work inside `PROFILER_RULES` modules (plus `extra_rules`,
    module types the paper's profiler also has a rule for), as the thop/ptflops profilers of the
    papers' code do (`rule_macs`); otherwise every op (`macs`). `forward_kwargs` go to the
    model's forward (e.g. a decode length). `why` cites the paper and code lines the choice
    follows; `stisr complexity` writes it into its JSON. `fitted`: why the FLOPs count was made
    to match the paper's by a choice the paper does not state (the table marks such cells, and
    their agreement is no evidence).
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    profiler_rules: bool = False
    why: str = "every op at the model's own input size"
    extra_rules: tuple[type[nn.Module], ...] = ()
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fitted: str | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model`, called with `forward_kwargs` (what count and latency should run)."""
        return _ForwardWith(model, self.forward_kwargs) if self.forward_kwargs else model

    def count(self, model: nn.Module, *inputs: Any) -> dict[str, int]:
        """`count_flops` under this convention; `paper_macs` is the number to set beside the
        paper's (`rule_macs` with profiler rules, else `macs`)."""
        out = count_flops(self.wrap(model), *inputs, rules=PROFILER_RULES + self.extra_rules)
        out["paper_macs"] = out["rule_macs"] if self.profiler_rules else out["macs"]
        return out


class _ForwardWith(nn.Module):
    def __init__(self, model: nn.Module, kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        self.model, self.kwargs = model, dict(kwargs)

    def forward(self, *inputs: Any) -> Any:
        return self.model(*inputs, **self.kwargs)


# One entry per recognizer (model name); models without an entry use `PaperCount()`. The zoo
# complexity table (papers/zoo.yaml) states the input size and convention of each row.
PAPER_COUNTS: dict[str, PaperCount] = {
    "crnn": PaperCount(
        {"img_w": 128},
        True,
        "IMAGE Table 1 (0.91G): IMAGE gives no input size; its recognizers read the 32x128 SR "
        "images (Sec. 3.1: 4x the 16x64 LR) and its own recognizer reads 32x128 (M = 32 columns, "
        "Sec. 4.2), so 32x128 rather than crnn.pytorch's 32x100 (0.71G); thop rules (CRNN has no "
        "attention, so they count every op)",
    ),
    "svtr": PaperCount(
        {"img_w": 128},
        True,
        "IMAGE Table 1 (1.90G): 32x128 as for CRNN; thop rules skip the attention matmuls "
        "(0.13G at 32x128)",
    ),
    "abinet": PaperCount(
        {"iter_size": 1},
        True,
        "KD-LTR Table 5 (5.46G): KD-LTR's ABINet runs the language model and the alignment once "
        "(csguoh/KD-LTR model/ABINet/ABINet.py, ABINet_model.forward); its profiler (ptflops, "
        "imported in interfaces/Trainer.py) has no rule for the MultiheadAttention that ABINet's "
        "code vendors (modules/transformer.py), so attention layers (1.1G) are not counted",
    ),
    "matrn": PaperCount(
        {},
        True,
        "KD-LTR Table 5 (9.86G): 3 iterations (csguoh/KD-LTR model/MATRN/matrn.py, iter_size = 3), "
        "same profiler as ABINet, so attention layers (3.6G) are not counted",
    ),
    "parseq": PaperCount(
        {"decode_ar": True, "refine_iters": 1},
        True,
        "KD-LTR Table 5 (2.93G): KD-LTR's PARSeq decodes autoregressively with 1 refinement "
        "(csguoh/KD-LTR model/parseq/parseq_LR.py) and is profiled with ptflops, which counts "
        "nn.MultiheadAttention (the decoder's) but not the ViT's functional attention matmuls "
        "(0.15G). Autoregressive cost grows with the predicted word: 2.80G for EOS alone, "
        "+0.043G per character. The word KD-LTR's profiled input produced is not stated; a "
        "3-character word + EOS (counted here) gives 2.93G, 2 or 4 characters stay within 2%. "
        "The official PARSeq benchmark (baudm/parseq bench.py, fvcore: NAR + 3 refinements, "
        "every op) gives 3.255G; tests check both",
        extra_rules=(nn.MultiheadAttention,),
        forward_kwargs={"max_length": 3},
        fitted="the decoded length (3 characters + EOS) is chosen so that the count meets "
        "KD-LTR's 2.93G; KD-LTR does not state the word its profiled input produced",
    ),
    "aster": PaperCount(
        {},
        False,
        "no paper number: the STISR code's input (32x128, TPS-rectified to 32x100), every op; "
        "beam search stops once all 5 beams end, so the decoder's share depends on the image",
    ),
    "moran": PaperCount(
        {}, False, "no paper number: the STISR code's input (32x100 grey), every op, 20 steps"
    ),
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

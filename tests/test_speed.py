"""The speed paths compute what the plain formulations compute (engine/speed.py, the TSRN layers).

Each fast path (sub-pixel tail conv, conv1 folded into the RNN, channels-last) is compared in
float64 or within float32 rounding against the straightforward code it replaces.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stisr.engine.optim import build_optimizer
from stisr.engine.speed import channels_last_safe, fused_optimizer, prepare_model, to_device
from stisr.losses import build_loss
from stisr.models.layers.recurrent import RecurrentLine, keep_grad_layout
from stisr.models.layers.upsample import subpixel_conv_weight, upsample_tail
from stisr.models.objective import Context
from stisr.models.sr.tsrn import TSRN, TSRNConfig


def grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out.square().sum(), inputs)


@pytest.mark.parametrize("activation", ["prelu", "mish"])
@pytest.mark.parametrize("scale", [2, 4])
def test_upsample_tail_equals_conv_after_pixel_shuffle(activation: str, scale: int) -> None:
    torch.manual_seed(0)
    tail = upsample_tail(8, 4, scale, activation).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.double, requires_grad=True)
    fast, plain = tail(x), nn.Sequential.forward(tail, x)
    assert fast.shape == (2, 4, 5 * scale, 7 * scale)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    inputs = [x, *tail.parameters()]
    for a, b in zip(grads(fast, inputs), grads(plain, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert [k for k, _ in tail.state_dict().items()][-2:] == [
        f"{scale.bit_length() - 1}.weight",
        f"{scale.bit_length() - 1}.bias",
    ]


def test_subpixel_weight_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd square kernel"):
        subpixel_conv_weight(torch.zeros(4, 2, 4, 4), 2)


def test_per_channel_prelu_keeps_the_plain_path() -> None:
    torch.manual_seed(0)
    tail = upsample_tail(4, 3, 2, "prelu").double()
    tail[0].prelu = nn.PReLU(4).double()  # does not commute with the shuffle
    with torch.no_grad():
        tail[0].prelu.weight.uniform_(-1, 1)
    x = torch.randn(1, 4, 3, 5, dtype=torch.double)
    torch.testing.assert_close(tail(x), nn.Sequential.forward(tail, x), rtol=0, atol=0)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_recurrent_line_folded_conv_equals_conv_then_rnn(rnn: str) -> None:
    torch.manual_seed(0)
    line = RecurrentLine(8, 6, rnn).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.double, requires_grad=True)
    b, _, h, w = x.shape
    rows = line.conv1(x).permute(0, 2, 3, 1).reshape(b * h, w, 6)
    plain = line.gru(rows)[0].reshape(b, h, w, 6).permute(0, 3, 1, 2)
    fast = line(x)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    inputs = [x, *line.parameters()]
    for a, c in zip(grads(fast, inputs), grads(plain, inputs), strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
    # along the height = along the width of the transposed map (the official code's gru1)
    column = line(x, along="height")
    torch.testing.assert_close(column, line(x.transpose(-1, -2)).transpose(-1, -2))
    with pytest.raises(ValueError, match="along"):
        line(x, along="depth")


def test_keep_grad_layout_returns_the_inputs_layout() -> None:
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = keep_grad_layout(x).transpose(-1, -2)
    (g,) = torch.autograd.grad(y, x, torch.randn(y.shape))
    assert g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous()


def tiny_tsrn() -> TSRN:
    return TSRN(TSRNConfig(srb_nums=2, hidden_units=8, rnn="lstm"))


def test_channels_last_changes_nothing_but_the_layout() -> None:
    torch.manual_seed(0)
    batch = {"lr": torch.rand(3, 4, 16, 64), "hr": torch.rand(3, 4, 32, 128), "label": ["a"] * 3}
    ctx = Context(weights={"mse": 1.0}, image_loss=build_loss({"mse": 1.0}))
    plain = tiny_tsrn().train()
    fast = tiny_tsrn().train()
    fast.load_state_dict(plain.state_dict())
    prepare_model(fast, "cpu", channels_last=True)
    moved = to_device(batch, "cpu", channels_last=True)
    assert moved["lr"].is_contiguous(memory_format=torch.channels_last)
    assert moved["label"] == batch["label"]
    loss_plain = plain.training_loss(batch, ctx)[0]
    loss_fast = fast.training_loss(moved, ctx)[0]
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    loss_plain.backward()
    loss_fast.backward()
    ref = torch.cat([p.grad.flatten() for p in plain.parameters()])
    got = torch.cat([p.grad.flatten() for p in fast.parameters()])
    assert ((got - ref).norm() / ref.norm()).item() < 1e-4  # float32 rounding, other kernels


def test_fused_optimizer_only_with_cuda() -> None:
    assert not fused_optimizer("cpu") and fused_optimizer("cuda:0")
    groups = [{"params": [nn.Parameter(torch.zeros(2))], "lr": 1e-3}]
    opt = build_optimizer("adam", groups, betas=(0.9, 0.999), weight_decay=0.0, fused=False)
    assert not opt.defaults.get("fused")


def test_channels_last_is_refused_for_the_strided_1x1_convs_that_crash_onednn() -> None:
    narrow = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 1, stride=2))
    wide = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 1, stride=2))
    assert not channels_last_safe(narrow, "cpu") and channels_last_safe(narrow, "cuda")
    assert channels_last_safe(wide, "cpu")
    assert channels_last_safe(nn.Sequential(nn.Conv2d(8, 8, 3, stride=2)), "cpu")

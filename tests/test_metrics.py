"""Tests for stisr.metrics: accuracy, PSNR/SSIM (vs. an independent scipy reference), complexity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from stisr.metrics.accuracy import (
    TEXTZOOM_TEST_SIZES,
    correct_mask,
    weighted_average,
    word_accuracy,
    wrong_char_positions,
)
from stisr.metrics.complexity import (
    PAPER_COUNTS,
    PaperCount,
    count_flops,
    count_parameters,
    measure_latency,
    recurrent_macs,
)
from stisr.metrics.image_quality import gaussian_window, psnr, ssim

# toggling torch.backends.mkldnn (to reach the decomposed RNN path) warns about TF32 on Intel GPUs
_NO_TF32_WARNING = pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")

# ---------------------------------------------------------------- accuracy


def test_word_accuracy_ignores_case_and_punctuation():
    preds = ["Hello!", "world", "c-a-t", "dog", ""]
    labels = ["hello", "WORLD.", "cat", "dot", "--"]
    assert correct_mask(preds, labels) == [True, True, True, False, True]
    assert word_accuracy(preds, labels) == pytest.approx(4 / 5)


def test_word_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="2 entries"):
        word_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        word_accuracy([], [])
    with pytest.raises(TypeError):
        word_accuracy("abc", "abc")


def test_weighted_average_textzoom_sizes():
    acc = {"easy": 0.5, "medium": 0.25, "hard": 0.1}
    expected = (0.5 * 1619 + 0.25 * 1411 + 0.1 * 1343) / 4373
    assert weighted_average(acc, TEXTZOOM_TEST_SIZES) == pytest.approx(expected)
    assert sum(TEXTZOOM_TEST_SIZES.values()) == 4373
    # equal values average to themselves; extra sizes are ignored
    assert weighted_average({"easy": 0.3, "hard": 0.3}, TEXTZOOM_TEST_SIZES) == pytest.approx(0.3)


def test_weighted_average_errors_name_the_subset():
    with pytest.raises(KeyError, match="extreme"):
        weighted_average({"easy": 0.1, "extreme": 0.2}, TEXTZOOM_TEST_SIZES)
    with pytest.raises(ValueError, match="at least one"):
        weighted_average({}, TEXTZOOM_TEST_SIZES)
    with pytest.raises(ValueError, match="'a'"):
        weighted_average({"a": 0.1}, {"a": -1})
    with pytest.raises(ValueError, match="total size 0"):
        weighted_average({"a": 0.1}, {"a": 0})


@pytest.mark.parametrize(
    ("pred", "label", "wrong"),
    [
        ("hello", "hello", []),
        ("hallo", "hello", [1]),  # substitution
        ("heello", "hello", [1]),  # insertion: one of the two e's (the first, by tie-break)
        ("helo", "hello", []),  # deletion: nothing drawn red
        ("abc", "xyz", [0, 1, 2]),
        ("", "abc", []),
        ("abc", "", [0, 1, 2]),
        ("H-e-l-l-x", "hello", [4]),  # positions refer to the normalized prediction "hellx"
    ],
)
def test_wrong_char_positions(pred, label, wrong):
    assert wrong_char_positions(pred, label) == wrong


def test_wrong_char_positions_count_is_bounded_by_edit_distance():
    # #wrong = substitutions + insertions <= edit distance; "kitten"->"sitting" has distance 3
    wrong = wrong_char_positions("kitten", "sitting")
    assert wrong == [0, 4]  # k->s, e->i (the final g is a deletion)
    assert wrong_char_positions("AbC", "abc", normalize=False) == [0, 2]


# ---------------------------------------------------------------- PSNR / SSIM


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM for (C, H, W) images: scipy Gaussian filter, zero ('constant') borders."""
    sigma, radius = 1.5, 5
    opts = {"sigma": sigma, "mode": "constant", "cval": 0.0, "truncate": radius / sigma}
    vals = []
    for x, y in zip(a, b, strict=True):
        mx, my = gaussian_filter(x, **opts), gaussian_filter(y, **opts)
        vx = gaussian_filter(x * x, **opts) - mx * mx
        vy = gaussian_filter(y * y, **opts) - my * my
        cxy = gaussian_filter(x * y, **opts) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(m.mean())
    return float(np.mean(vals))


def _ssim_reference_valid(a: np.ndarray, b: np.ndarray) -> float:
    """Same statistics, averaged only where the 11x11 window lies inside the image."""
    opts = {"sigma": 1.5, "mode": "constant", "truncate": 5 / 1.5}
    vals = []
    for x, y in zip(a, b, strict=True):
        mx, my = gaussian_filter(x, **opts), gaussian_filter(y, **opts)
        vx = gaussian_filter(x * x, **opts) - mx * mx
        vy = gaussian_filter(y * y, **opts) - my * my
        cxy = gaussian_filter(x * y, **opts) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(m[5:-5, 5:-5].mean())
    return float(np.mean(vals))


@pytest.fixture
def image_pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 3, 32, 128, generator=gen)
    sr = (hr + 0.1 * torch.randn(3, 3, 32, 128, generator=gen)).clamp(0, 1)
    return sr, hr


def test_ssim_matches_scipy_reference(image_pair):
    sr, hr = image_pair
    got = ssim(sr, hr)
    assert got.shape == (3,)
    for i in range(3):
        ref = _ssim_reference(sr[i].double().numpy(), hr[i].double().numpy())
        assert got[i].item() == pytest.approx(ref, abs=1e-9)
    got_valid = ssim(sr, hr, padding="valid")
    ref_valid = _ssim_reference_valid(sr[0].double().numpy(), hr[0].double().numpy())
    assert got_valid[0].item() == pytest.approx(ref_valid, abs=1e-9)
    assert not torch.allclose(got, got_valid)  # the padding choice matters


@pytest.mark.parametrize("size", [(8, 16), (11, 11), (5, 40)])
def test_ssim_matches_reference_when_window_exceeds_image(size):
    gen = torch.Generator().manual_seed(7)
    hr = torch.rand(1, 3, *size, generator=gen)
    sr = torch.rand(1, 3, *size, generator=gen)
    ref = _ssim_reference(sr[0].double().numpy(), hr[0].double().numpy())
    assert ssim(sr, hr)[0].item() == pytest.approx(ref, abs=1e-9)


def test_ssim_identical_is_one_and_ignores_mask_channel(image_pair):
    _, hr = image_pair
    assert torch.allclose(ssim(hr, hr), torch.ones(3, dtype=torch.float64))
    rgbm_sr = torch.cat([hr, torch.zeros(3, 1, 32, 128)], dim=1)
    rgbm_hr = torch.cat([hr, torch.ones(3, 1, 32, 128)], dim=1)
    assert torch.allclose(ssim(rgbm_sr, rgbm_hr), torch.ones(3, dtype=torch.float64))
    assert torch.isinf(psnr(rgbm_sr, rgbm_hr)).all()


def test_ssim_is_symmetric_and_below_one(image_pair):
    sr, hr = image_pair
    a, b = ssim(sr, hr), ssim(hr, sr)
    assert torch.allclose(a, b)
    assert (a < 1).all() and (a > 0).all()


def test_gaussian_window_is_normalized_and_peaked():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11)
    assert w.sum().item() == pytest.approx(1.0)
    assert w.argmax().item() == 5 * 11 + 5
    with pytest.raises(ValueError, match="odd"):
        gaussian_window(10)


def test_psnr_constant_offset():
    hr = torch.full((2, 3, 8, 16), 0.5)
    sr = hr + 0.1  # MSE = 0.01 -> 10 * log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(sr, hr), torch.full((2,), 20.0, dtype=torch.float64))
    # data_range 255 on 0..255 images gives the same figure
    assert psnr(sr * 255, hr * 255, data_range=255.0)[0].item() == pytest.approx(20.0)
    assert psnr(hr + 0.01, hr)[0].item() == pytest.approx(40.0)


def test_psnr_identical_is_inf_per_image():
    hr = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(1))
    sr = hr.clone()
    sr[1] += 0.1
    out = psnr(sr, hr)
    assert math.isinf(out[0].item()) and out[0].item() > 0
    assert math.isfinite(out[1].item())


def test_image_quality_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="differ"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="padding"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), padding="reflect")
    with pytest.raises(ValueError, match="window_size"):
        ssim(torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16), padding="valid")


# ---------------------------------------------------------------- complexity


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


def test_count_parameters_frozen_and_shared():
    model = _Tiny()
    conv, bn, fc = 3 * 4 * 9 + 4, 4 + 4, 4 * 2 + 2
    assert count_parameters(model) == conv + bn + fc
    for p in model.conv.parameters():
        p.requires_grad = False
    assert count_parameters(model) == conv + bn + fc
    assert count_parameters(model, trainable_only=True) == bn + fc
    shared = nn.Sequential(model.fc, model.fc)
    assert count_parameters(shared) == fc


def test_count_flops_conv_and_linear_by_hand():
    model = _Tiny().train()
    x = torch.rand(2, 3, 8, 8)
    out = count_flops(model, x)
    conv_macs = 2 * 8 * 8 * 4 * 3 * 9  # B * H * W * Cout * Cin * k*k
    fc_macs = 2 * 4 * 2
    assert out["macs"] == conv_macs + fc_macs
    assert out["flops"] == 2 * out["macs"]
    assert out["recurrent_flops"] == 0
    assert model.training  # mode restored
    assert model.bn.num_batches_tracked.item() == 0  # counted in eval mode: no BN update


def _lstm_macs_by_hand(inp: int, hid: int, layers: int, dirs: int, steps: int) -> int:
    total = 0
    for layer in range(layers):
        layer_in = inp if layer == 0 else hid * dirs
        total += dirs * (4 * hid * layer_in + 4 * hid * hid)
    return total * steps


@_NO_TF32_WARNING
def test_count_flops_supplements_fused_lstm():
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.rand(2, 5, 8)
    expected = _lstm_macs_by_hand(8, 16, 2, 2, steps=2 * 5)
    # (8*64 + 16*64) * 2 + (32*64 + 16*64) * 2 = 3072 + 6144 per step
    assert expected == 9216 * 10
    assert recurrent_macs(lstm, x) == expected
    with torch.backends.mkldnn.flags(enabled=False):  # decomposed path: counted natively
        native = count_flops(lstm, x, supplement_recurrent=False)
        both = count_flops(lstm, x)
    assert native["macs"] == expected
    assert both["macs"] == expected and both["recurrent_flops"] == 0  # no double counting
    fused = count_flops(lstm, x)
    assert fused["macs"] == expected
    assert fused["counted_flops"] + fused["recurrent_flops"] == 2 * expected


@pytest.mark.parametrize(
    ("module", "x"),
    [
        (nn.GRU(8, 16, num_layers=2, bidirectional=True), torch.rand(5, 2, 8)),
        (nn.RNN(8, 16), torch.rand(5, 8)),  # unbatched
        (nn.LSTM(8, 16, proj_size=4), torch.rand(5, 2, 8)),
        (nn.LSTMCell(8, 16), torch.rand(3, 8)),
        (nn.GRUCell(8, 16), torch.rand(3, 8)),
    ],
)
@_NO_TF32_WARNING
def test_recurrent_formula_matches_decomposed_count(module, x):
    with torch.backends.mkldnn.flags(enabled=False):
        native = count_flops(module, x, supplement_recurrent=False)
    assert native["macs"] == recurrent_macs(module, x)


def test_recurrent_macs_packed_sequence():
    from torch.nn.utils.rnn import pack_padded_sequence

    gru = nn.GRU(8, 16)
    packed = pack_padded_sequence(torch.rand(5, 2, 8), [5, 3])
    assert recurrent_macs(gru, packed) == 8 * (8 * 48 + 16 * 48)
    with pytest.raises(TypeError, match="not a recurrent"):
        recurrent_macs(nn.Linear(2, 2), torch.rand(1, 2))


def test_count_flops_lstm_inside_model_called_by_keyword():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(input=x)
            return self.head(out)

    x = torch.rand(2, 7, 4)
    out = count_flops(Wrapper(), x)
    assert out["macs"] == 14 * (4 * 24 + 6 * 24) + 14 * 6 * 3


class _TinyAttention(nn.Module):
    """nn.MultiheadAttention on its CPU fast path + a direct SDPA call with L != S."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.memory = nn.Parameter(torch.rand(1, 7, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.mha(x, x, x, need_weights=False)  # self-attention, eval: the fused path
        b, length, dim = x.shape
        q = x.view(b, length, self.heads, -1).transpose(1, 2)
        kv = self.memory.expand(b, -1, -1).reshape(b, 7, self.heads, -1).transpose(1, 2)
        return nn.functional.scaled_dot_product_attention(q, kv, kv)


def test_count_flops_counts_attention_on_cpu():
    """The CPU fused kernels (flash SDPA, MHA fast path) have no FLOP formula; counting must
    still see QK^T and AV (2 * B * L * S * dim MACs) and the MHA projections (4 * B * L * dim^2)."""
    model = _TinyAttention().eval()
    b, length, dim = 2, 5, 16
    out = count_flops(model, torch.rand(b, length, dim))
    projections = 4 * b * length * dim * dim
    self_attention = 2 * b * length * length * dim
    cross_attention = 2 * b * length * 7 * dim
    assert out["macs"] == projections + self_attention + cross_attention
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is restored


def test_count_flops_rule_macs_skip_functional_matmuls():
    """`rule_macs` is what thop-like profilers see: Linear/conv/recurrent modules only."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.rnn = nn.GRU(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)  # (5, 2, 6)
            y = y @ torch.ones(6, 6)  # functional: not in rule_macs
            return self.rnn(y)[0]

    out = count_flops(Mixed(), torch.rand(5, 2, 4))
    linear, matmul, gru = 10 * 4 * 6, 10 * 6 * 6, 10 * (6 * 9 + 3 * 9)
    assert out["macs"] == linear + matmul + gru
    assert out["rule_macs"] == linear + gru


def test_paper_counts_are_stated_in_the_zoo_table():
    """Each zoo complexity row states the input size its PAPER_COUNTS entry makes the model read."""
    from stisr.models.registry import build_model
    from stisr.papers.spec import load_specs

    table = next(t for t in load_specs()["zoo"].tables if t.id == "complexity")
    for row in table.rows:
        name = row.source["recognizer"]
        count = PAPER_COUNTS[name]
        model = build_model(name, dict(count.config))
        h, w = model.preprocess(torch.rand(1, 3, 32, 128)).shape[2:]
        stated = row.text["Counted as"]
        assert stated.startswith(f"{h}x{w},"), (name, stated)
        assert ("profiler rules" in stated) == count.profiler_rules, (name, stated)


@pytest.mark.parametrize(
    ("name", "paper_gmacs"),
    [("crnn", 0.91), ("svtr", 1.90), ("abinet", 5.46), ("matrn", 9.86), ("parseq", 2.93)],
)
def test_paper_counts_reproduce_the_papers_within_2_percent(name, paper_gmacs):
    """IMAGE Table 1 and KD-LTR Table 5 under the conventions PAPER_COUNTS documents."""
    from stisr.models.registry import build_model

    torch.manual_seed(0)
    count = PAPER_COUNTS[name]
    model = build_model(name, dict(count.config))
    out = count.count(model, model.preprocess(torch.rand(1, 3, 32, 128)))
    assert out["paper_macs"] / 1e9 == pytest.approx(paper_gmacs, rel=0.02)


def test_parseq_counts_match_kdltr_per_character_and_the_official_benchmark():
    """KD-LTR's convention: 2.80G for EOS alone, +0.043G per decoded character (the stated
    basis of the 2.93G row); baudm/parseq README (bench.py, fvcore): 3.255G for NAR + 3
    refinements, every op."""
    from stisr.models.registry import build_model

    count = PAPER_COUNTS["parseq"]
    model = build_model("parseq", dict(count.config))
    x = model.preprocess(torch.rand(1, 3, 32, 128))
    per_length = [
        PaperCount(
            count.config, True, extra_rules=count.extra_rules, forward_kwargs={"max_length": n}
        ).count(model, x)["paper_macs"]
        / 1e9
        for n in (0, 1)
    ]
    assert per_length[0] == pytest.approx(2.80, abs=0.005)
    assert per_length[1] - per_length[0] == pytest.approx(0.043, abs=0.001)
    bench = build_model("parseq", {"decode_ar": False, "refine_iters": 3})
    out = count_flops(bench, x)
    assert out["macs"] / 1e9 == pytest.approx(3.255, rel=0.005)


def test_measure_latency_reports_positive_times():
    model = _Tiny()
    out = measure_latency(model, torch.rand(1, 3, 8, 8), warmup=1, repeats=3)
    assert set(out) == {"mean_ms", "std_ms"}
    assert out["mean_ms"] > 0 and out["std_ms"] >= 0
    assert model.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, torch.rand(1, 3, 8, 8), repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        measure_latency(model, torch.rand(1, 3, 8, 8), warmup=-1)


def test_only_the_parseq_flops_are_fitted_to_the_paper():
    """The decoded length behind PARSeq's 2.93G is our choice: its cell must say so."""
    fitted = {name for name, count in PAPER_COUNTS.items() if count.fitted}
    assert fitted == {"parseq"} and "2.93G" in PAPER_COUNTS["parseq"].fitted

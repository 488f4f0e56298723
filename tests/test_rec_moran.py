"""MORAN v2: official checkpoint layout, size, rectifier, decoding, loss and input."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from stisr.models.rec.moran import (
    ALPHABET,
    MORAN,
    MORANConfig,
    mix_neighbours,
    official_state_dict,
)
from stisr.models.registry import build_model
from tests.recognizer_checks import fit_losses

_BN = ("weight", "bias", "running_mean", "running_var")
TINY = {
    "hidden": 16,
    "embedding_dim": 8,
    "morn_widths": (4, 8, 4, 4),
    "cnn_widths": (4, 4, 8, 8, 8, 16),
    "cnn_blocks": (1, 1, 1, 1, 1),
    "max_len": 8,
}


def _conv_bn(s: dict, conv: str, bn: str, out_c: int, in_c: int, k: int) -> None:
    s[f"{conv}.weight"] = (out_c, in_c, k, k)
    s[f"{conv}.bias"] = (out_c,)
    for name in _BN:
        s[f"{bn}.{name}"] = (out_c,)


def _official_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """Keys/shapes of MORAN_v2 `MORAN(1, 37, 256, 32, 100, BidirDecoder=True)` (demo.pth, saved
    under torch 0.3: DataParallel `module.` prefix, no BatchNorm `num_batches_tracked`)."""
    s: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    # MORN.cnn = [pool, conv, bn, relu, pool, conv, bn, relu, pool, conv, bn, relu, conv, bn, relu,
    #             conv, bn]
    for conv, out_c, in_c in [(1, 64, 1), (5, 128, 64), (9, 64, 128), (12, 16, 64), (15, 1, 16)]:
        _conv_bn(s, f"MORN.cnn.{conv}", f"MORN.cnn.{conv + 1}", out_c, in_c, 3)
    _conv_bn(s, "ASRN.cnn.block0.0", "ASRN.cnn.block0.1", 32, 1, 3)
    prev = 32
    for i, (c_out, blocks) in enumerate([(32, 3), (64, 4), (128, 6), (256, 6), (512, 3)], 1):
        for j in range(blocks):
            p = f"ASRN.cnn.block{i}.{j}"
            if j == 0:  # strided first block: 3x3 conv1 and a 3x3 conv shortcut
                _conv_bn(s, f"{p}.downsample.0", f"{p}.downsample.1", c_out, prev, 3)
                _conv_bn(s, f"{p}.conv1.0", f"{p}.conv1.1", c_out, prev, 3)
            else:
                _conv_bn(s, f"{p}.conv1.0", f"{p}.conv1.1", c_out, c_out, 1)
            _conv_bn(s, f"{p}.conv2.0", f"{p}.conv2.1", c_out, c_out, 3)
        prev = c_out
    for j, n_in in enumerate((512, 256)):  # BidirectionalLSTM(n_in, 256, 256)
        for suffix in ("", "_reverse"):
            s[f"ASRN.rnn.{j}.rnn.weight_ih_l0{suffix}"] = (1024, n_in)
            s[f"ASRN.rnn.{j}.rnn.weight_hh_l0{suffix}"] = (1024, 256)
            s[f"ASRN.rnn.{j}.rnn.bias_ih_l0{suffix}"] = (1024,)
            s[f"ASRN.rnn.{j}.rnn.bias_hh_l0{suffix}"] = (1024,)
        s[f"ASRN.rnn.{j}.embedding.weight"] = (256, 512)
        s[f"ASRN.rnn.{j}.embedding.bias"] = (256,)
    for d in ("attentionL2R", "attentionR2L"):  # Attention(256, 256, 37, 256)
        p = f"ASRN.{d}"
        s[f"{p}.char_embeddings"] = (38, 256)
        s[f"{p}.attention_cell.i2h.weight"] = (256, 256)
        s[f"{p}.attention_cell.h2h.weight"] = (256, 256)
        s[f"{p}.attention_cell.h2h.bias"] = (256,)
        s[f"{p}.attention_cell.score.weight"] = (1, 256)
        s[f"{p}.attention_cell.rnn.weight_ih"] = (768, 512)  # GRUCell(256 context + 256 emb)
        s[f"{p}.attention_cell.rnn.weight_hh"] = (768, 256)
        s[f"{p}.attention_cell.rnn.bias_ih"] = (768,)
        s[f"{p}.attention_cell.rnn.bias_hh"] = (768,)
        s[f"{p}.generator.weight"] = (37, 256)
        s[f"{p}.generator.bias"] = (37,)
    return s


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_official_checkpoint_loads_strictly() -> None:
    raw = OrderedDict(("module." + k, torch.randn(s)) for k, s in _official_shapes().items())
    model = MORAN()
    result = model.load_state_dict(official_state_dict(raw), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(
        model.ASRN.attentionR2L.char_embeddings, raw["module.ASRN.attentionR2L.char_embeddings"]
    )
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: v for k, v in ours.items() if "num_batches" not in k} == dict(_official_shapes())
    assert ALPHABET == "0123456789abcdefghijklmnopqrstuvwxyz$"  # '0:1:...:z:$'.split(':')


def test_parameter_count_at_paper_scale() -> None:
    # Official count, from the module definitions of MORAN_v2 (summed in _official_shapes):
    # MORN 158,211 + ASRN ResNet 15,805,280 + two BiLSTMs 2,892,288 + two decoders 2 x 742,181.
    # None of the five replicated papers prints MORAN's size.
    official = sum(math.prod(s) for k, s in _official_shapes().items() if "running" not in k)
    model = MORAN()
    n = sum(p.numel() for p in model.parameters())
    assert n == official == 158_211 + 15_805_280 + 2_892_288 + 2 * 742_181 == 20_340_141
    assert sum(p.numel() for p in model.MORN.parameters()) == 158_211


def test_morn_with_zero_offsets_is_the_identity() -> None:
    # The last BatchNorm gives the offset map; with zero output, sampling must be exact identity
    # (grid in [-1, 1] with align_corners=True, as under torch 0.3).
    model = MORAN(MORANConfig(**TINY)).eval()
    last_bn = model.MORN.cnn[16]
    torch.nn.init.zeros_(last_bn.weight)
    torch.nn.init.zeros_(last_bn.bias)
    x = torch.rand(2, 1, 32, 100)
    torch.testing.assert_close(model.MORN(x, 1), x)
    torch.nn.init.constant_(last_bn.bias, 0.3)  # uniform offset: rows shift down 0.15 * 31 px
    shifted = model.MORN(x, 0)
    assert not torch.allclose(shifted, x)
    expected = F.grid_sample(
        x,
        torch.stack(
            torch.meshgrid(
                torch.linspace(-1, 1, 100), torch.linspace(-1, 1, 32) + 0.3, indexing="xy"
            ),
            dim=-1,
        ).expand(2, 32, 100, 2),
        align_corners=True,
    )
    torch.testing.assert_close(shifted, expected)


def test_forward_and_decode_shapes_tiny() -> None:
    model = MORAN(MORANConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 3, 16, 64))
    assert x.shape == (3, 1, 32, 100)
    with torch.no_grad():
        out = model(x)
    assert out["l2r"].shape == (3, 8, 37) and out["r2l"].shape == (3, 8, 37)
    words = model.decode(out)
    assert len(words) == 3 and all(set(w) <= set(ALPHABET[:-1]) for w in words)
    with pytest.raises(ValueError, match="MORAN expects"):
        model(torch.rand(2, 3, 32, 100))


def _logits(words: list[str], steps: int, high: float) -> torch.Tensor:
    out = torch.zeros(len(words), steps, 37)
    for b, w in enumerate(words):
        for t, c in enumerate((w + "$" * steps)[:steps]):
            out[b, t, ALPHABET.index(c)] = high
    return out


def test_decode_cuts_at_eos_and_best_direction() -> None:
    l2r = _logits(["hello", "abc", ""], 8, 5.0)
    r2l = _logits(["olleh", "dcb", "x"], 8, 5.0)
    r2l[1] *= 2.0  # the right-to-left decoder is more confident on the second word
    r2l[2] *= 0.5  # and less on the third (a tie would go to R2L: MORAN compares with '>')
    model = MORAN(MORANConfig(**TINY))
    assert model.decode({"l2r": l2r, "r2l": r2l}) == ["hello", "abc", ""]  # TextZoom: L2R only
    best = MORAN(MORANConfig(**TINY, decode_direction="best"))
    assert best.decode({"l2r": l2r, "r2l": r2l}) == ["hello", "bcd", ""]


def test_frac_pickup_mixes_two_neighbours_and_keeps_mass() -> None:
    alpha = torch.rand(3, 10).softmax(dim=1)
    mixed = mix_neighbours(alpha, 4, 0.2)
    torch.testing.assert_close(mixed.sum(1), alpha.sum(1))
    torch.testing.assert_close(mixed[:, 3], 0.8 * alpha[:, 3] + 0.2 * alpha[:, 4])
    torch.testing.assert_close(mixed[:, 4], 0.2 * alpha[:, 3] + 0.8 * alpha[:, 4])
    keep = [i for i in range(10) if i not in (3, 4)]
    torch.testing.assert_close(mixed[:, keep], alpha[:, keep])


def test_training_loss_finite_decreasing_and_empty_labels() -> None:
    model = MORAN(MORANConfig(**TINY)).train()
    x = model.preprocess(torch.rand(4, 3, 32, 128))
    labels = ["Hello!", "", "A-1", "y" * 30]  # '' trains a lone '$'; 30 chars cut to 7
    targets, lengths = model.encode_labels(labels, x.device)
    assert lengths.tolist() == [6, 1, 3, 8]
    assert "".join(ALPHABET[i] for i in targets[0, 0].tolist()) == "hello$$$"
    assert "".join(ALPHABET[i] for i in targets[0, 1].tolist()) == "olleh$$$"
    losses = fit_losses(model, x, labels, steps=10, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(ValueError, match="labels"):
        model.text_loss(x, ["one"])


def test_preprocess_luma_in_unit_range() -> None:
    model = MORAN(MORANConfig(**TINY))
    rgb = torch.rand(2, 4, 20, 70)
    ref = F.interpolate(rgb[:, :3], size=(32, 100), mode="bicubic", align_corners=False)
    ref = 0.299 * ref[:, :1] + 0.587 * ref[:, 1:2] + 0.114 * ref[:, 2:3]
    torch.testing.assert_close(model.preprocess(rgb), ref)
    sym = MORAN(MORANConfig(**TINY, input_norm="symmetric"))
    torch.testing.assert_close(sym.preprocess(rgb), ref * 2 - 1)


def test_config_validation_and_registry() -> None:
    model = build_model("moran", {**TINY, "cnn_widths": list(TINY["cnn_widths"])})
    assert isinstance(model, MORAN) and model.config.cnn_widths == (4, 4, 8, 8, 8, 16)
    single = MORAN(MORANConfig(**TINY, bidirectional_decoder=False)).eval()
    assert not hasattr(single.ASRN, "attentionR2L")
    assert set(single(single.preprocess(torch.rand(1, 3, 32, 128)))) == {"l2r"}
    with pytest.raises(ValueError, match="img_h"):
        MORANConfig(img_h=64)
    with pytest.raises(ValueError, match="decode_direction"):
        MORANConfig(decode_direction="r2l")
    with pytest.raises(ValueError, match="bidirectional"):
        MORANConfig(decode_direction="best", bidirectional_decoder=False)


@pytest.mark.slow
def test_paper_config_forward() -> None:
    model = MORAN().eval()
    with torch.no_grad():
        out = model(model.preprocess(torch.rand(2, 3, 32, 128)))
    assert out["l2r"].shape == (2, 20, 37)
    assert len(model.decode(out)) == 2

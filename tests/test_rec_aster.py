"""ASTER: official aster.pytorch checkpoint layout, size, beam search, decoding, loss, input."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stisr.models.rec.aster import (
    ASTER,
    ASTERConfig,
    AttentionRecognitionHead,
    official_state_dict,
)
from stisr.models.registry import build_model
from tests.recognizer_checks import fit_losses

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
TINY = {
    "widths": (4, 4, 8, 8, 8, 16),
    "blocks": (1, 1, 1, 1, 1),
    "lstm_hidden": 8,
    "s_dim": 16,
    "att_dim": 16,
    "max_len": 12,
}


def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (() if k == "num_batches_tracked" else (n,)) for k in _BN}


def _official_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """Keys/shapes of aster.pytorch `ModelBuilder(arch='ResNet_ASTER', rec_num_classes=97,
    sDim=512, attDim=512, STN_ON=True)` with `--with_lstm` (demo.pth.tar's `state_dict`)."""
    s: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    s["encoder.layer0.0.weight"] = (32, 3, 3, 3)
    s.update(_bn("encoder.layer0.1", 32))
    prev = 32
    for i, (planes, blocks) in enumerate([(32, 3), (64, 4), (128, 6), (256, 6), (512, 3)], 1):
        for j in range(blocks):
            p = f"encoder.layer{i}.{j}"
            s[f"{p}.conv1.weight"] = (planes, prev if j == 0 else planes, 1, 1)
            s.update(_bn(f"{p}.bn1", planes))
            s[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            s.update(_bn(f"{p}.bn2", planes))
            if j == 0:  # every layer's first block strides, so it has a projection shortcut
                s[f"{p}.downsample.0.weight"] = (planes, prev, 1, 1)
                s.update(_bn(f"{p}.downsample.1", planes))
        prev = planes
    for layer in ("l0", "l1"):  # nn.LSTM(512, 256, num_layers=2, bidirectional=True)
        for suffix in ("", "_reverse"):
            s[f"encoder.rnn.weight_ih_{layer}{suffix}"] = (1024, 512)
            s[f"encoder.rnn.weight_hh_{layer}{suffix}"] = (1024, 256)
            s[f"encoder.rnn.bias_ih_{layer}{suffix}"] = (1024,)
            s[f"encoder.rnn.bias_hh_{layer}{suffix}"] = (1024,)
    d = "decoder.decoder"
    for name in ("sEmbed", "xEmbed"):
        s[f"{d}.attention_unit.{name}.weight"] = (512, 512)
        s[f"{d}.attention_unit.{name}.bias"] = (512,)
    s[f"{d}.attention_unit.wEmbed.weight"] = (1, 512)
    s[f"{d}.attention_unit.wEmbed.bias"] = (1,)
    s[f"{d}.tgt_embedding.weight"] = (98, 512)  # 97 classes + <BOS>
    s[f"{d}.gru.weight_ih_l0"] = (1536, 1024)  # GRU(512 embedding + 512 context, 512)
    s[f"{d}.gru.weight_hh_l0"] = (1536, 512)
    s[f"{d}.gru.bias_ih_l0"] = (1536,)
    s[f"{d}.gru.bias_hh_l0"] = (1536,)
    s[f"{d}.fc.weight"] = (97, 512)
    s[f"{d}.fc.bias"] = (97,)
    # TPSSpatialTransformer buffers: 20 control points, 32x100 output.
    s["tps.inverse_kernel"] = (23, 23)
    s["tps.padding_matrix"] = (3, 2)
    s["tps.target_coordinate_repr"] = (3200, 23)
    s["tps.target_control_points"] = (20, 2)
    prev = 3
    for idx, width in zip((0, 2, 4, 6, 8, 10), (32, 64, 128, 256, 256, 256), strict=True):
        s[f"stn_head.stn_convnet.{idx}.0.weight"] = (width, prev, 3, 3)
        s[f"stn_head.stn_convnet.{idx}.0.bias"] = (width,)
        s.update(_bn(f"stn_head.stn_convnet.{idx}.1", width))
        prev = width
    s["stn_head.stn_fc1.0.weight"] = (512, 512)  # 256 channels x 1 x 2 after 32x64 input
    s["stn_head.stn_fc1.0.bias"] = (512,)
    s.update(_bn("stn_head.stn_fc1.1", 512))
    s["stn_head.stn_fc2.weight"] = (40, 512)
    s["stn_head.stn_fc2.bias"] = (40,)
    return s


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _fake_checkpoint(prefix: str = "") -> dict:
    state = {
        prefix + k: (
            torch.randint(0, 9, s) if k.endswith("num_batches_tracked") else torch.randn(s)
        )
        for k, s in _official_shapes().items()
    }
    return {"state_dict": state, "epoch": 6, "best_res": 0.93}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_loads_strictly(prefix: str) -> None:
    raw = _fake_checkpoint(prefix)
    model = ASTER()
    result = model.load_state_dict(official_state_dict(raw), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    fc = raw["state_dict"][prefix + "decoder.decoder.fc.weight"]
    torch.testing.assert_close(model.decoder.decoder.fc.weight, fc)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == dict(_official_shapes())


def test_tps_buffers_match_official_construction() -> None:
    # The buffers are saved in demo.pth.tar; ours must be the same matrices so that a model
    # built without a checkpoint rectifies like the released one (target points at 5% margins).
    tps = ASTER().tps
    pts = tps.target_control_points
    torch.testing.assert_close(pts[0], torch.tensor([0.05, 0.05]))
    torch.testing.assert_close(pts[-1], torch.tensor([0.95, 0.95]))
    coord = tps.target_coordinate_repr[101]  # pixel (y=1, x=1) of the 32x100 grid
    torch.testing.assert_close(coord[-2:], torch.tensor([1 / 99, 1 / 31]))
    assert coord[20].item() == 1.0


def test_parameter_count_at_paper_scale() -> None:
    # Official count, from the module definitions of aster.pytorch (summed in _official_shapes):
    # ResNet 12,994,784 + BiLSTM 3,153,920 + attention decoder 2,988,130 + STN head 1,854,760.
    # None of the five replicated papers prints ASTER's size.
    official = sum(
        math.prod(s)
        for k, s in _official_shapes().items()
        if not k.startswith("tps.") and k.rsplit(".", 1)[-1] not in _BN[2:]
    )
    model = ASTER()
    n = sum(p.numel() for p in model.parameters())
    assert n == official == 12_994_784 + 3_153_920 + 2_988_130 + 1_854_760 == 20_991_594
    assert sum(p.numel() for p in model.stn_head.parameters()) == 1_854_760


def test_forward_and_decode_shapes_tiny() -> None:
    model = ASTER(ASTERConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 3, 16, 64))
    assert x.shape == (3, 3, 16, 64)  # read at the size it comes in, as the STISR code does
    with torch.no_grad():
        ids = model(x)
    assert ids.dtype == torch.long and ids.shape[0] == 3 and 1 <= ids.shape[1] <= 12
    words = model.decode(ids)
    assert len(words) == 3 and all(w == w.lower() and w.isalnum() or w == "" for w in words)
    with pytest.raises(ValueError, match="ASTER expects"):
        model(torch.rand(2, 1, 32, 100))


def test_decode_stops_at_eos_and_normalizes() -> None:
    model = ASTER(ASTERConfig(**TINY))
    chars = model.chars
    eos, pad, unk = model.eos, model.padding, model.unknown
    rows = [
        [chars.index(c) for c in "Hello"] + [eos, chars.index("x")],
        [chars.index("A"), unk, chars.index("!"), chars.index("1"), pad, eos, eos],
        [eos] * 7,
    ]
    assert model.decode(torch.tensor(rows)) == ["hello", "a1", ""]


class _TableStep(nn.Module):
    """Stub decoder step: log-probabilities depend only on the previous id (3 classes, EOS=2)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_unit = nn.Module()
        self.attention_unit.xEmbed = nn.Identity()
        tiny = 1e-6
        table = {
            3: [0.6, 0.4, tiny],  # start -> a 0.6, b 0.4
            0: [0.3, 0.3, 0.4],  # after a: EOS 0.4 (greedy ends "a": 0.24)
            1: [0.05, 0.05, 0.9],  # after b: EOS 0.9 ("b": 0.36, the better word)
            2: [tiny, tiny, 1.0],
        }
        self.table = {k: torch.tensor(v).log() for k, v in table.items()}

    def forward(self, feats, x_proj, state, y_prev):  # noqa: ANN001, ANN201 (test stub)
        return torch.stack([self.table[int(y)] for y in y_prev]), state


def test_beam_search_beats_greedy_and_greedy_is_argmax() -> None:
    head = AttentionRecognitionHead(num_classes=3, in_planes=4, s_dim=2, att_dim=2)
    head.decoder = _TableStep()
    feats = torch.zeros(1, 5, 4)
    assert head.beam_search(feats, 1, 10, eos=2).tolist() == [[0, 2]]  # greedy: "a"
    assert head.beam_search(feats, 2, 10, eos=2).tolist() == [[1, 2]]  # beam 2 finds "b"
    # a real decoder: beam width 1 must follow the argmax of the teacher-forced logits
    model = ASTER(ASTERConfig(**TINY, beam_width=1)).eval()
    with torch.no_grad():
        x = model.preprocess(torch.rand(2, 3, 32, 128))
        ids = model(x)
        logits = model.decoder.teacher_forced(model.encode(x), ids)
    for b in range(2):
        row = ids[b].tolist()
        end = row.index(model.eos) + 1 if model.eos in row else len(row)
        assert logits[b, :end].argmax(dim=1).tolist() == row[:end]


def test_training_loss_finite_decreasing_and_empty_labels() -> None:
    model = ASTER(ASTERConfig(**TINY)).train()
    x = model.preprocess(torch.rand(4, 3, 32, 128))
    labels = ["Hello!", "", "a b", "x" * 40]  # '' trains a lone EOS; 40 chars cut to 11
    targets, lengths = model.encode_labels(labels, x.device)
    assert lengths.tolist() == [7, 1, 3, 12]
    assert targets[1, 0].item() == model.eos and targets[2, 2].item() == model.eos
    losses = fit_losses(model, x, labels, steps=8, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0]
    with pytest.raises(ValueError, match="labels"):
        model.text_loss(x, ["one"])


def test_training_loss_is_official_sequence_cross_entropy() -> None:
    # SequenceCrossEntropyLoss(sample_normalize=True): sum of -log p over label+EOS steps / batch.
    model = ASTER(ASTERConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(2, 3, 32, 128))
    labels = ["ab", "c"]
    with torch.no_grad():
        targets, _ = model.encode_labels(labels, x.device)
        logp = model.decoder.teacher_forced(model.encode(x), targets).log_softmax(2)
        expected = -(logp[0, :3].gather(1, targets[0, :3, None]).sum())
        expected -= logp[1, :2].gather(1, targets[1, :2, None]).sum()
        torch.testing.assert_close(model.text_loss(x, labels), expected / 2)


def test_preprocess_range_size_and_channels() -> None:
    rgbm = torch.rand(2, 4, 32, 128)
    model = ASTER(ASTERConfig(**TINY))
    x = model.preprocess(rgbm)
    torch.testing.assert_close(x, rgbm[:, :3] * 2 - 1)
    assert x.min() >= -1 and x.max() <= 1
    sized = ASTER(ASTERConfig(**TINY, input_size=(32, 128))).preprocess(torch.rand(2, 3, 16, 64))
    assert sized.shape == (2, 3, 32, 128)
    no_stn = ASTER(ASTERConfig(**TINY, use_stn=False))
    rgb = torch.rand(2, 3, 16, 64)
    ref = F.interpolate(rgb, size=(32, 100), mode="bicubic", align_corners=False) * 2 - 1
    torch.testing.assert_close(no_stn.preprocess(rgb), ref)
    assert not hasattr(no_stn, "stn_head")
    assert no_stn.eval()(no_stn.preprocess(rgb)).shape[0] == 2
    with pytest.raises(ValueError, match="preprocess"):
        ASTER(ASTERConfig(**TINY, use_stn=False)).preprocess(torch.rand(2, 32, 100))


def test_config_validation_and_registry() -> None:
    model = build_model("aster", {**TINY, "widths": list(TINY["widths"]), "voc_type": "lower"})
    assert isinstance(model, ASTER) and model.config.widths == (4, 4, 8, 8, 8, 16)
    assert model.num_classes == 39 and model.decoder.decoder.fc.out_features == 39
    with pytest.raises(ValueError, match="widths"):
        ASTERConfig(widths=(32, 64))
    with pytest.raises(ValueError, match="voc_type"):
        ASTERConfig(voc_type="upper")
    with pytest.raises(ValueError, match="tps_output_size"):
        ASTERConfig(tps_output_size=(64, 100))
    with pytest.raises(ValueError, match="state_dict"):
        official_state_dict({"state_dict": [1, 2]})


@pytest.mark.slow
def test_paper_config_forward_with_official_layout() -> None:
    model = ASTER().eval()
    with torch.no_grad():
        ids = model(model.preprocess(torch.rand(2, 3, 32, 128)))
    assert ids.shape[0] == 2 and ids.shape[1] <= 100
    assert len(model.decode(ids)) == 2


def test_aux_ctc_adds_the_ctc_of_its_head_and_is_off_by_default() -> None:
    from stisr.models.layers.aux_ctc import aux_ctc_loss

    assert ASTER(ASTERConfig(**TINY)).aux_ctc_head is None  # official layout: no extra keys
    torch.manual_seed(0)
    model = ASTER(ASTERConfig(**TINY, aux_ctc=0.5)).eval()
    x = model.preprocess(torch.rand(2, 3, 32, 128))
    labels = ["ab", "cd"]
    with torch.no_grad():
        feats = model.encode(x)
        targets, lengths = model.encode_labels(labels, x.device)
        logits = model.decoder.teacher_forced(feats, targets)
        mask = torch.arange(targets.shape[1])[None] < lengths[:, None]
        ce = (F.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * mask).sum() / 2
        ids = [model.charset.encode("ab"), model.charset.encode("cd")]
        ctc = aux_ctc_loss(model.aux_ctc_head(feats), ids)
        torch.testing.assert_close(model.text_loss(x, labels), ce + 0.5 * ctc)
    probs = torch.full((1, 4, 3), 1.0 / 3).log()  # uniform over blank + 2 chars, 4 frames
    assert aux_ctc_loss(probs, [[1, 2]]).item() > 0
    with pytest.raises(ValueError, match="labels"):
        aux_ctc_loss(probs, [[1], [2]])


def test_sixteen_row_input_for_the_reim_setting() -> None:
    """TSRN Table 2 ReIm: ASTER read at 64x16 (no STN): same parameters, one stride fewer."""
    full = ASTER(ASTERConfig(**TINY, use_stn=False))
    reim = ASTER(ASTERConfig(**TINY, input_size=(16, 64), use_stn=False))
    assert [p.shape for p in full.parameters()] == [p.shape for p in reim.parameters()]
    x = reim.preprocess(torch.rand(2, 3, 32, 128))
    assert x.shape == (2, 3, 16, 64) and reim.encode(x).shape[1] == 16
    assert len(reim.decode(reim(x))) == 2
    with pytest.raises(ValueError, match="16-row"):
        reim.encode(torch.rand(1, 3, 32, 64))
    with pytest.raises(ValueError, match="height must be 32, or 16"):
        ASTERConfig(**TINY, input_size=(24, 64), use_stn=False)

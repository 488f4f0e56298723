"""CRNN: official crnn.pytorch state-dict layout, preprocessing, greedy CTC decode, CTC loss."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from stisr.charset import Charset
from stisr.models.rec.crnn import CRNN, CRNNConfig

# Keys and shapes of meijieru/crnn.pytorch `CRNN(imgH=32, nc=1, nclass=37, nh=256)` (crnn.pth).
# BatchNorm layers follow conv2, conv4, conv6; each BiLSTM is `rnn` (LSTM) + `embedding` (Linear).
_BN = ("weight", "bias", "running_mean", "running_var")
_LSTM = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _official_shapes() -> OrderedDict[str, tuple[int, ...]]:
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    convs = [(64, 1, 3), (128, 64, 3), (256, 128, 3), (256, 256, 3), (512, 256, 3), (512, 512, 3)]
    convs.append((512, 512, 2))
    for i, (out_c, in_c, k) in enumerate(convs):
        shapes[f"cnn.conv{i}.weight"] = (out_c, in_c, k, k)
        shapes[f"cnn.conv{i}.bias"] = (out_c,)
        if i in (2, 4, 6):
            for name in _BN:
                shapes[f"cnn.batchnorm{i}.{name}"] = (out_c,)
    for j, (n_in, n_out) in enumerate([(512, 256), (256, 37)]):
        for suffix in ("", "_reverse"):
            lstm = dict(zip(_LSTM, [(1024, n_in), (1024, 256), (1024,), (1024,)], strict=True))
            for name, shape in lstm.items():
                shapes[f"rnn.{j}.rnn.{name}{suffix}"] = shape
        shapes[f"rnn.{j}.embedding.weight"] = (n_out, 512)
        shapes[f"rnn.{j}.embedding.bias"] = (n_out,)
    return shapes


TINY = {"cnn_widths": (4, 8, 8, 8, 16, 16, 16), "hidden": 16}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_official_state_dict_loads_strictly() -> None:
    # crnn.pth predates BatchNorm's `num_batches_tracked`; torch fills it in for old state dicts.
    fake = {k: torch.randn(s) for k, s in _official_shapes().items()}
    model = CRNN()
    result = model.load_state_dict(fake, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(model.rnn[1].embedding.weight, fake["rnn.1.embedding.weight"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: v for k, v in ours.items() if "num_batches" not in k} == dict(_official_shapes())


def test_parameter_count_at_paper_scale() -> None:
    # CNN 5,551,360 + BiLSTM(512,256)+Linear 1,708,288 + BiLSTM(256,256)+Linear(512,37) 1,071,653.
    # IMAGE Table 1 lists CRNN as 8.36M; the official architecture has 8.33M.
    n = sum(p.numel() for p in CRNN().parameters())
    assert n == 5_551_360 + 1_708_288 + 1_071_653 == 8_331_301


def test_forward_shape_and_sequence_length() -> None:
    model = CRNN(CRNNConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 3, 16, 64))
    assert x.shape == (3, 1, 32, 100)
    assert model(x).shape == (26, 3, 37)
    with pytest.raises(ValueError, match="preprocess"):
        model(torch.rand(3, 3, 32, 100))


def test_preprocess_luma_grey_in_unit_range() -> None:
    model = CRNN(CRNNConfig(**TINY))
    rgbm = torch.zeros(1, 4, 16, 64)
    rgbm[:, 0], rgbm[:, 1], rgbm[:, 2], rgbm[:, 3] = 0.2, 0.6, 1.0, 1.0  # mask must be ignored
    grey = model.preprocess(rgbm)
    expected = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0
    torch.testing.assert_close(grey, torch.full((1, 1, 32, 100), expected))
    rgb = torch.rand(2, 3, 20, 70)
    ref = F.interpolate(rgb, size=(32, 100), mode="bicubic", align_corners=False)
    ref = 0.299 * ref[:, :1] + 0.587 * ref[:, 1:2] + 0.114 * ref[:, 2:3]
    torch.testing.assert_close(model.preprocess(rgb), ref)
    sym = CRNN(CRNNConfig(**TINY, input_norm="symmetric")).preprocess(rgbm)
    torch.testing.assert_close(sym, torch.full((1, 1, 32, 100), 2 * expected - 1))


def test_decode_hand_made_logits() -> None:
    cs = Charset()
    paths = [
        [cs.encode("h")[0]] * 2 + [0] + cs.encode("el") + [0] + cs.encode("lo") + [0],
        [0, 0] + cs.encode("2") + [0] + cs.encode("2") * 2 + cs.encode("z") + [0, 0],
        [0] * 9,
    ]
    logits = torch.full((9, 3, 37), -5.0)
    for b, path in enumerate(paths):
        for t, cls in enumerate(path):
            logits[t, b, cls] = 5.0
    assert CRNN(CRNNConfig(**TINY)).decode(logits) == ["hello", "22z", ""]


def test_ctc_loss_finite_and_decreasing_with_empty_label() -> None:
    model = CRNN(CRNNConfig(**TINY)).train()
    images = model.preprocess(torch.rand(4, 3, 16, 64))
    labels = ["Ab1", "", "x-9!", "QQ"]  # normalized to ab1, '', x9, qq
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.loss(model(images), labels)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_ctc_loss_matches_torch_mean_reduction() -> None:
    model = CRNN(CRNNConfig(**TINY))
    logits = torch.randn(26, 2, 37)
    labels = ["ab", "c"]
    targets = torch.tensor(Charset().encode("abc"))
    ref = F.ctc_loss(logits.log_softmax(2), targets, [26, 26], [2, 1], blank=0, reduction="mean")
    torch.testing.assert_close(model.loss(logits, labels), ref)
    assert torch.isfinite(model.loss(logits, ["", "!!"]))  # all-empty targets: all-blank paths
    with pytest.raises(ValueError, match="labels"):
        model.loss(logits, ["only one"])


def test_config_validation() -> None:
    assert CRNNConfig(cnn_widths=[1, 2, 3, 4, 5, 6, 7]).cnn_widths == (1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(ValueError, match="num_classes"):
        CRNNConfig(num_classes=40)
    with pytest.raises(ValueError, match="cnn_widths"):
        CRNNConfig(cnn_widths=(64, 128))
    with pytest.raises(ValueError, match="img_h"):
        CRNNConfig(img_h=64)
    with pytest.raises(ValueError, match="input_norm"):
        CRNNConfig(input_norm="imagenet")

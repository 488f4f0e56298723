"""The auxiliary CTC training aid of the attention recognizers (models/layers/aux_ctc.py).

For MORAN, ABINet, MATRN and PARSeq: off by default with no extra keys (the official layout), and
when on, the training loss is the plain loss plus weight x CTC(head(encoder columns)) / mean
tokens, with the columns and label ids computed here from the model's own parts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.rec.abinet import ABINet, ABINetConfig
from stisr.models.rec.matrn import MATRN, MATRNConfig
from stisr.models.rec.moran import MORAN, MORANConfig
from stisr.models.rec.parseq import PARSeq, PARSeqConfig
from tests import test_rec_abinet, test_rec_matrn, test_rec_moran, test_rec_parseq

LABELS = ["ab1", "", "zz"]


def abinet_columns(model: ABINet | MATRN, x: Tensor) -> Tensor:
    return model.vision.backbone(x).mean(dim=2).transpose(1, 2)


def parseq_columns(model: PARSeq, x: Tensor) -> Tensor:
    cfg = model.config
    memory = model.encoder(x)
    return memory.unflatten(1, (cfg.img_h // cfg.patch_h, cfg.img_w // cfg.patch_w)).mean(1)


CASES: dict[str, tuple[Callable[..., nn.Module], Callable[[float], object], Callable]] = {
    "abinet": (ABINet, lambda w: ABINetConfig(**test_rec_abinet.TINY, aux_ctc=w), abinet_columns),
    "matrn": (
        MATRN,
        lambda w: MATRNConfig(**test_rec_matrn.TINY_MATRN, aux_ctc=w),
        abinet_columns,
    ),
    "parseq": (
        PARSeq,
        lambda w: PARSeqConfig(**test_rec_parseq.TINY, dropout=0.0, aux_ctc=w),
        parseq_columns,
    ),
}


def label_ids(model: nn.Module, labels: list[str]) -> list[list[int]]:
    """CTC targets 1..n: every model here numbers its characters from 1 (0 = end/blank)."""
    return [model.charset.encode(model.charset.filter(s)) for s in labels]


@pytest.mark.parametrize("name", sorted(CASES))
def test_aux_ctc_is_off_by_default_and_adds_the_weighted_ctc(name: str) -> None:
    cls, make_config, columns = CASES[name]
    assert cls(make_config(0.0)).aux_ctc_head is None  # official layout: no extra keys
    torch.manual_seed(0)
    with_aux = cls(make_config(0.5)).eval()  # eval: no dropout, BatchNorm from running stats
    plain = cls(make_config(0.0)).eval()
    state = {k: v for k, v in with_aux.state_dict().items() if not k.startswith("aux_ctc_head")}
    plain.load_state_dict(state, strict=True)
    x = with_aux.preprocess(torch.rand(len(LABELS), 3, 32, 128))
    with torch.no_grad():
        ids = label_ids(with_aux, LABELS)
        tokens = sum(len(i) + 1 for i in ids) / len(ids)
        ctc = aux_ctc_loss(with_aux.aux_ctc_head(columns(with_aux, x)), ids)
        torch.manual_seed(1)
        expected = plain.text_loss(x, LABELS) + 0.5 * ctc / tokens
        torch.manual_seed(1)
        torch.testing.assert_close(with_aux.text_loss(x, LABELS), expected)


def test_moran_aux_ctc_reads_the_asrn_features() -> None:
    torch.manual_seed(0)
    with_aux = MORAN(MORANConfig(**test_rec_moran.TINY, aux_ctc=0.5)).eval()
    assert MORAN(MORANConfig(**test_rec_moran.TINY)).aux_ctc_head is None
    plain = MORAN(MORANConfig(**test_rec_moran.TINY)).eval()
    state = {k: v for k, v in with_aux.state_dict().items() if not k.startswith("aux_ctc_head")}
    plain.load_state_dict(state, strict=True)
    x = with_aux.preprocess(torch.rand(len(LABELS), 3, 32, 128))
    with torch.no_grad():
        torch.manual_seed(1)
        expected_plain = plain.text_loss(x, LABELS)
        torch.manual_seed(1)
        got = with_aux.text_loss(x, LABELS)
        # Replay the same random choices to get the features the loss saw.
        torch.manual_seed(1)
        cfg = with_aux.config
        if torch.rand(()).item() > 0.5:
            rect = nn.functional.interpolate(
                x, size=(cfg.img_h, cfg.img_w), mode="bilinear", align_corners=True
            )
        else:
            rect = with_aux.MORN(x, 0)
        feats = with_aux.ASRN.features(rect).transpose(0, 1)
    ids = label_ids(with_aux, LABELS)
    tokens = sum(len(i) + 1 for i in ids) / len(ids)
    ctc = aux_ctc_loss(with_aux.aux_ctc_head(feats), ids)
    torch.testing.assert_close(got, expected_plain + 0.5 * ctc / tokens)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MORANConfig(aux_ctc=-1.0),
        lambda: ABINetConfig(aux_ctc=-0.5),
        lambda: PARSeqConfig(aux_ctc="1"),
    ],
)
def test_aux_ctc_weight_is_validated(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="aux_ctc"):
        make()

"""PARSeq: official v1.0.0 checkpoint layout, parameter count, AR/NAR decoding, PLM loss."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from stisr.charset import FULL_CHARSET
from stisr.config import load_params
from stisr.models.rec.parseq import (
    EOS_ID,
    PARSEQ_TINY,
    PARSeq,
    PARSeqConfig,
    official_state_dict,
)
from tests.recognizer_checks import fit_losses

from .conftest import REPO

TINY = {
    "embed_dim": 16,
    "enc_depth": 1,
    "enc_num_heads": 2,
    "dec_num_heads": 2,
    "dec_mlp_ratio": 2,
    "enc_mlp_ratio": 2,
    "max_label_length": 8,
}


def _official_shapes(
    dim: int = 384, depth: int = 12, mlp: int = 4, dec_depth: int = 1, chars: int = 94
) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of baudm/parseq v1.0.0 `PARSeq` (parseq-bb5792a6.pt): a timm
    VisionTransformer encoder without cls token/head (`encoder.*`), `Decoder` of `DecoderLayer`s
    built on nn.MultiheadAttention (`decoder.*`), `head`, `text_embed`, `pos_queries`."""
    s: dict[str, tuple[int, ...]] = {
        "pos_queries": (1, 26, dim),
        "encoder.pos_embed": (1, 128, dim),  # (32/4) * (128/8) patches
        "encoder.patch_embed.proj.weight": (dim, 3, 4, 8),
        "encoder.patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"encoder.blocks.{i}."
        s.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,)})
        s.update({b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,)})
        s.update({b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,)})
        s.update({b + "norm2.weight": (dim,), b + "norm2.bias": (dim,)})
        s.update({b + "mlp.fc1.weight": (mlp * dim, dim), b + "mlp.fc1.bias": (mlp * dim,)})
        s.update({b + "mlp.fc2.weight": (dim, mlp * dim), b + "mlp.fc2.bias": (dim,)})
    s.update({"encoder.norm.weight": (dim,), "encoder.norm.bias": (dim,)})
    for i in range(dec_depth):
        b = f"decoder.layers.{i}."
        for attn in ("self_attn", "cross_attn"):
            s[f"{b}{attn}.in_proj_weight"] = (3 * dim, dim)
            s[f"{b}{attn}.in_proj_bias"] = (3 * dim,)
            s[f"{b}{attn}.out_proj.weight"] = (dim, dim)
            s[f"{b}{attn}.out_proj.bias"] = (dim,)
        s.update({b + "linear1.weight": (mlp * dim, dim), b + "linear1.bias": (mlp * dim,)})
        s.update({b + "linear2.weight": (dim, mlp * dim), b + "linear2.bias": (dim,)})
        for norm in ("norm1", "norm2", "norm_q", "norm_c"):
            s.update({f"{b}{norm}.weight": (dim,), f"{b}{norm}.bias": (dim,)})
    s.update({"decoder.norm.weight": (dim,), "decoder.norm.bias": (dim,)})
    s.update({"head.weight": (chars + 1, dim), "head.bias": (chars + 1,)})  # EOS + chars
    s["text_embed.embedding.weight"] = (chars + 3, dim)  # + BOS, PAD
    return s


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_official_checkpoint_loads_strictly() -> None:
    shapes = _official_shapes()
    fake = {k: torch.randn(s) for k, s in shapes.items()}
    model = PARSeq()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    result = model.load_state_dict(official_state_dict(fake), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(model.head.weight, fake["head.weight"])
    # newer strhub: Lightning checkpoint with the network under `model.`
    wrapped = {"state_dict": {f"model.{k}": v for k, v in fake.items()}, "epoch": 3}
    mapped = official_state_dict(wrapped)
    assert mapped.keys() == fake.keys()
    torch.testing.assert_close(mapped["pos_queries"], fake["pos_queries"])
    with pytest.raises(ValueError, match="not a tensor"):
        official_state_dict({"head.weight": [1.0]})


def test_parameter_counts() -> None:
    # Encoder 21,380,736 (patch 37,248 + pos 49,152 + 12 x 1,774,464 + norm 768), decoder
    # 2,368,128 (layer 2,367,360 + norm 768), head 36,575, text_embed 37,248, pos_queries 9,984:
    # 23,832,671 = the released parseq (paper: 23.8M). KD-LTR Table 5 lists PARSeq-LTR with
    # 23.81M: the same model at 16x64 with 2x4 patches (its LR student) has exactly that.
    assert sum(p.numel() for p in PARSeq().parameters()) == 23_832_671
    lr_student = PARSeq(PARSeqConfig(img_h=16, img_w=64, patch_h=2, patch_w=4))
    n_lr = sum(p.numel() for p in lr_student.parameters())
    assert n_lr == 23_805_023
    assert abs(n_lr / 23.81e6 - 1) < 0.02
    # parseq_tiny (embed 192, 3 encoder / 6 decoder heads): 6.0M in the PARSeq paper.
    tiny = PARSeq(PARSeqConfig(**PARSEQ_TINY))
    assert sum(p.numel() for p in tiny.parameters()) == 6_018_143


def test_forward_decode_shapes_and_modes() -> None:
    model = PARSeq(PARSeqConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 3, 16, 64))
    assert x.shape == (3, 3, 32, 128)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape[0] == 3 and logits.shape[1] <= 9 and logits.shape[2] == 95
        model.config.decode_ar, model.config.refine_iters = False, 2
        assert model(x).shape == (3, 9, 95)
        assert model(x, max_length=4).shape == (3, 5, 95)
    texts = model.decode(logits)
    assert len(texts) == 3 and all(set(t) <= set(FULL_CHARSET) for t in texts)
    with pytest.raises(ValueError, match="preprocess"):
        model(torch.rand(1, 3, 32, 100))


def test_decode_cuts_at_first_eos() -> None:
    model = PARSeq(PARSeqConfig(**TINY))
    ids = [[1 + FULL_CHARSET.index(c) for c in "Hi!"] + [EOS_ID, 5, 6], [EOS_ID] * 6]
    logits = F.one_hot(torch.tensor(ids), 95).float()
    assert model.decode(logits) == ["Hi!", ""]


def test_incremental_ar_decoding_equals_one_causal_pass() -> None:
    # The step-by-step greedy decoder must equal one teacher-forced pass over its own output
    # under the canonical (left-to-right) permutation masks.
    cfg = PARSeqConfig(**TINY, refine_iters=0, ar_early_exit=False, dropout=0.0)
    model = PARSeq(cfg).eval()
    x = torch.randn(2, 3, 32, 128)
    with torch.no_grad():
        logits = model(x)
        steps = logits.shape[1]
        tgt_in = torch.cat([torch.full((2, 1), model.bos_id), logits[:, :-1].argmax(-1)], dim=1)
        content_mask, query_mask = model.attention_masks(torch.arange(steps + 1))
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool), 1)
        assert torch.equal(query_mask, causal) and torch.equal(content_mask, causal)
        out = model._decode(tgt_in, model.encoder(x), content_mask, query_mask=query_mask)
        torch.testing.assert_close(model.head(out), logits, atol=1e-5, rtol=1e-4)


def test_permutations_follow_plm_rules() -> None:
    model = PARSeq(PARSeqConfig(**TINY))
    for n in (2, 3, 4, 7):
        perms = model.permutations(n, torch.device("cpu"))
        expected = min(6, 2 * max(1, len(list(itertools.permutations(range(n)))) // 2))
        assert perms.shape == (expected, n + 2)
        assert torch.equal(perms[0], torch.arange(n + 2))  # canonical order first
        # second: EOS position first, then the characters right to left
        assert perms[1].tolist() == [0, n + 1, *range(n, 0, -1)]
        assert (perms[:, 0] == 0).all()
        for p in perms:
            assert sorted(p.tolist()) == list(range(n + 2))
        body = perms[2:, 1:-1]
        for a, b in zip(body[0::2], body[1::2], strict=True):
            assert torch.equal(a.flip(0), b)  # mirrored pairs
        assert len({tuple(p.tolist()) for p in perms}) == len(perms)
    assert model.permutations(1, torch.device("cpu")).tolist() == [[0, 1, 2]]
    assert model.permutations(0, torch.device("cpu")).tolist() == [[0, 1]]


def test_attention_masks_of_a_permutation() -> None:
    perm = torch.tensor([0, 2, 1, 3])  # BOS, char 2, char 1, EOS
    content, query = PARSeq.attention_masks(perm)
    # content (BOS, char 1, char 2): BOS sees itself; char 1 comes last and sees everything;
    # char 2 sees BOS and itself.
    assert content.tolist() == [[False, True, True], [False, False, False], [False, True, False]]
    # queries (positions 1..3) never see their own token; position 1 comes after position 2.
    assert query.tolist() == [[False, True, False], [False, True, True], [False, False, False]]


def test_label_encoding_filters_and_truncates() -> None:
    model = PARSeq(PARSeqConfig(**TINY))
    tgt = model.encode_labels(["Ab c", "", "0123456789xyz"], torch.device("cpu"))
    assert tgt.shape == (3, 10)  # BOS + 8 (max length) + EOS
    assert tgt[0, :4].tolist() == [model.bos_id, 1 + FULL_CHARSET.index("A"), 12, 13]
    assert tgt[0, 4] == EOS_ID and (tgt[0, 5:] == model.pad_id).all()  # space dropped
    assert tgt[1, :2].tolist() == [model.bos_id, EOS_ID]
    assert tgt[2, -1] == EOS_ID and tgt[2, 1:-1].tolist() == list(range(1, 9))


def test_training_loss_finite_and_decreasing() -> None:
    model = PARSeq(PARSeqConfig(**TINY)).train()
    x = model.preprocess(torch.rand(4, 3, 16, 64))
    labels = ["Ab1", "", "x-9! long label", "QQ"]
    losses = fit_losses(model, x, labels, steps=10, lr=3e-3)
    assert losses[-1] < losses[0]
    assert torch.isfinite(model.text_loss(x, ["", "", "", ""]))
    with pytest.raises(ValueError, match="labels"):
        model.text_loss(x, ["a"])


def test_preprocess_normalizes_to_symmetric_range() -> None:
    model = PARSeq(PARSeqConfig(**TINY))
    rgbm = torch.zeros(2, 4, 16, 64)
    rgbm[:, 0], rgbm[:, 1], rgbm[:, 2], rgbm[:, 3] = 0.0, 0.25, 1.0, 1.0  # mask ignored
    out = model.preprocess(rgbm)
    assert out.shape == (2, 3, 32, 128)
    torch.testing.assert_close(out[:, 0], torch.full((2, 32, 128), -1.0))
    torch.testing.assert_close(out[:, 1], torch.full((2, 32, 128), -0.5))
    torch.testing.assert_close(out[:, 2], torch.full((2, 32, 128), 1.0))
    with pytest.raises(ValueError, match="3\\|4"):
        model.preprocess(torch.rand(2, 1, 16, 64))


def test_config_validation_and_demo() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PARSeqConfig(embed_dim=100)
    with pytest.raises(ValueError, match="patch"):
        PARSeqConfig(img_w=100)
    with pytest.raises(ValueError, match="duplicate"):
        PARSeqConfig(charset="aab")
    with pytest.raises(ValueError, match="perm_num"):
        PARSeqConfig(perm_num=3)
    demo_config = load_params(REPO / "params.yaml")["scales"]["demo"]["models"]["parseq"]
    demo = PARSeq(PARSeqConfig(**demo_config))  # the workflow's demo model: 36 characters
    assert demo.head.out_features == 37 and demo.text_embed.embedding.num_embeddings == 39

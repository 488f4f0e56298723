"""Scene Text Telescope's text-focus losses (Chen et al., CVPR 2021), shared by TBSRN and LEMMA.

A frozen transformer recognizer (`stisr.models.rec.stt_transformer.STTTransformer`, the released
`pretrain_transformer.pth`) reads the SR and the HR image under teacher forcing on the label.

* Position-aware loss: L1 between its cross-attention maps (B, heads, T, HW) on SR and on HR.
* Content-aware loss: its weighted cross-entropy reading SR against the label.

Facts from FudanVI/FudanOCR `scene-text-telescope/loss/text_focus_loss.py` and `weight_ce_loss.py`
(LEMMA's `loss/text_focus_loss.py` is the same):

* The transformer reads the luma (0.299/0.587/0.114) of the first 3 channels of SR and HR as
  given (TextZoom: 32x128, no resize, no normalization); labels are lower-cased 0-9a-z plus the
  end token, the decoder input is [start, c1..cn] padded with 0 to the longest label + 1.
* Attention reduction: `nn.L1Loss()` over the whole maps - a mean over every element, padded
  steps and all heads included. The HR map is the target; the official code does not detach it,
  but nothing trainable depends on HR, so computing it without gradient is the same loss.
* Content reduction: the weighted CE is summed over the characters of the batch (end tokens
  included, padding excluded) and divided by their number. The weight of class j for target g is
  `W[g, j]` of a 37x37 table built from a character confusion matrix (`confuse.pkl`, shipped with
  the resources, not with the repository); with all weights 1 it is plain cross-entropy:
  -log(W[g,g] e^{p_g} / sum_j W[g,j] e^{p_j}) = CE(p + log W[g], g).
  An earlier revision of the code applied it to the HR prediction; the current code and the
  paper use the SR prediction, as here.
* Weights in the official total: mse + 10 * attention + 0.0005 * content (LEMMA eq. 9 quotes
  lambda1 = 10, lambda2 = 0.0005); callers weight the unweighted pair returned here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.rec.stt_transformer import teacher_forcing_tensors

NUM_CLASSES = 37  # '-' + 0-9a-z
_LOWER = slice(11, 37)  # 'a'..'z' in the official standard alphabet '-0-9a-zA-Z'
_UPPER = slice(37, 63)


def confusion_weight_table(confuse: Tensor) -> Tensor:
    """The official 37x37 weight table from the 62x62 `confuse.pkl` matrix.

    Steps of `load_confuse_matrix`: rows of the matrix are taken as digits, upper, lower and
    reordered to (end = ones, digits, lower, upper); a column of ones (padding) is put in front of
    the columns, which keep their order (digits, upper, lower); every entry is inverted (1/0 -> 1);
    for i != j and j a lower-case letter column (11..36), W[i, j] = max(W[i, j], W[i, j + 26]);
    then rows and columns 0..36 are kept. Reproduced as written, diagonal of the letters included.
    """
    c = torch.as_tensor(confuse, dtype=torch.float64)
    if tuple(c.shape) != (62, 62):
        raise ValueError(f"confusion matrix must be 62x62, got {tuple(c.shape)}")
    rows = torch.cat([torch.ones(1, 62, dtype=c.dtype), c[:10], c[36:], c[10:36]], dim=0)
    full = torch.cat([torch.ones(63, 1, dtype=c.dtype), rows], dim=1)
    w = 1.0 / full
    w[torch.isposinf(w)] = 1.0
    merged = torch.maximum(w[:, _LOWER], w[:, _UPPER])
    off_diagonal = torch.ones(63, 26, dtype=torch.bool)
    off_diagonal[torch.arange(11, 37), torch.arange(26)] = False
    w[:, _LOWER] = torch.where(off_diagonal, merged, w[:, _LOWER])
    return w[:NUM_CLASSES, :NUM_CLASSES].float()


def weighted_cross_entropy(
    logits: Tensor, targets: Tensor, weight_table: Tensor | None = None
) -> Tensor:
    """Mean over N of -log(W[g,g] e^{p_g} / sum_j W[g,j] e^{p_j}); plain CE when no table."""
    logits = logits.float()
    if weight_table is not None:
        logits = logits + weight_table.to(logits).log()[targets]
    return F.cross_entropy(logits, targets)


def text_focus_losses(
    transformer: nn.Module,
    sr: Tensor,
    hr: Tensor,
    labels: Sequence[str],
    weight_table: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(attention_loss, content_loss), unweighted; gradients reach `sr` only.

    `transformer` is frozen (eval mode, no gradients, the caller's job) and offers `preprocess`
    (RGB(M) -> its input) and `forward_teacher(x, labels) -> (logits (B, T, C), maps)`.
    `weight_table` defaults to the transformer's `confusion_weights` (None: plain CE).
    """
    if sr.shape[0] != hr.shape[0] or len(labels) != sr.shape[0]:
        raise ValueError(
            f"text_focus_losses: {sr.shape[0]} SR, {hr.shape[0]} HR images and {len(labels)} labels"
        )
    labels = list(labels)
    if weight_table is None:
        weight_table = getattr(transformer, "confusion_weights", None)
    with torch.no_grad():
        _, hr_maps = transformer.forward_teacher(transformer.preprocess(hr), labels)
    logits, sr_maps = transformer.forward_teacher(transformer.preprocess(sr), labels)
    if sr_maps.shape != hr_maps.shape:
        raise ValueError(
            f"text_focus_losses: attention maps differ in shape, SR {tuple(sr_maps.shape)} vs "
            f"HR {tuple(hr_maps.shape)} (SR and HR must have the same size)"
        )
    attention = F.l1_loss(sr_maps.float(), hr_maps.float())
    _, targets, lengths = teacher_forcing_tensors(labels, logits.device)
    valid = torch.arange(targets.shape[1], device=logits.device)[None] < lengths[:, None]
    content = weighted_cross_entropy(logits[valid], targets[valid], weight_table)
    return attention, content

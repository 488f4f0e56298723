"""The text-prior (TP) loss of TPGSR (Ma et al., TIP 2023): L1 + KL between two prior sequences.

A text prior is a recognizer's per-frame character probability sequence (softmax over the classes,
e.g. CRNN's (T, B, 37)). TPGSR trains its TP generator on the LR (or previous SR) image to match
the prior a frozen recognizer reads from the HR image. As defined by the public code
(mjq11302010044/TPGSR `loss/semantic_loss.py`, `SemanticLoss` with lambda1 = lambda2 = 1):

    L_TP = mean |t_hr - t_lr| + mean (t_hr + eps) * (log(t_hr + eps) - log(t_lr + eps)),

eps = 1e-20, both means over every element (frames x batch x classes): the code's
`nn.KLDivLoss()` uses torch's element-wise `reduction='mean'`, not `batchmean`, so the KL term
is the per-sequence KL divided by T x C. The KL direction is KL(t_hr || t_lr) (the HR prior is the
target). The loss is shape-agnostic, so other text-prior methods (TATT, TCDM) can reuse it.
"""

from __future__ import annotations

from torch import Tensor, nn

TP_EPS = 1e-20  # added inside both logs, as in the code


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"text prior loss: pred and target must have the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def text_prior_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of two probability sequences (every element counts once)."""
    _check(pred, target)
    return (target.float() - pred.float()).abs().mean()


def text_prior_kl(pred: Tensor, target: Tensor, eps: float = TP_EPS) -> Tensor:
    """Element-wise mean of KL(target || pred), with `eps` inside both logs (torch 'mean')."""
    _check(pred, target)
    t = target.float() + eps
    return (t * (t.log() - (pred.float() + eps).log())).mean()


def text_prior_loss(
    pred: Tensor,
    target: Tensor,
    l1_weight: float = 1.0,
    kl_weight: float = 1.0,
    eps: float = TP_EPS,
) -> Tensor:
    """TPGSR's L_TP: `l1_weight * L1 + kl_weight * KL` (both 1 in the code)."""
    return l1_weight * text_prior_l1(pred, target) + kl_weight * text_prior_kl(pred, target, eps)


class TextPriorLoss(nn.Module):
    """Module form of `text_prior_loss(pred, target)` for probability sequences."""

    def __init__(self, l1_weight: float = 1.0, kl_weight: float = 1.0, eps: float = TP_EPS):
        super().__init__()
        if l1_weight < 0 or kl_weight < 0 or eps < 0:
            raise ValueError("TextPriorLoss: weights and eps must be >= 0")
        self.l1_weight, self.kl_weight, self.eps = float(l1_weight), float(kl_weight), float(eps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return text_prior_loss(pred, target, self.l1_weight, self.kl_weight, self.eps)

    def extra_repr(self) -> str:
        return f"l1_weight={self.l1_weight}, kl_weight={self.kl_weight}, eps={self.eps}"


__all__ = ["TP_EPS", "TextPriorLoss", "text_prior_kl", "text_prior_l1", "text_prior_loss"]

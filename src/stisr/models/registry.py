"""The one place that knows every model: name -> (config dataclass, nn.Module class).

Models never import this module (no cycles). Paper specs name models that may not be implemented
yet; `is_implemented` lets callers mark such cells "not reproduced" instead of failing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from stisr.models.rec.abinet import ABINet, ABINetConfig
from stisr.models.rec.aster import ASTER, ASTERConfig
from stisr.models.rec.crnn import CRNN, CRNNConfig
from stisr.models.rec.matrn import MATRN, MATRNConfig
from stisr.models.rec.moran import MORAN, MORANConfig
from stisr.models.rec.parseq import PARSeq, PARSeqConfig
from stisr.models.rec.stt_transformer import STTTransformer, STTTransformerConfig
from stisr.models.rec.svtr import SVTR, SVTRConfig
from stisr.models.sr.bicubic import Bicubic, BicubicConfig
from stisr.models.sr.edsr import EDSR, EDSRConfig
from stisr.models.sr.lapsrn import LapSRN, LapSRNConfig
from stisr.models.sr.lemma import LEMMA, LEMMAConfig
from stisr.models.sr.rdn import RDN, RDNConfig
from stisr.models.sr.rrdb import RRDBConfig, RRDBNet
from stisr.models.sr.srcnn import SRCNN, SRCNNConfig
from stisr.models.sr.srresnet import SRResNet, SRResNetConfig
from stisr.models.sr.tatt import TATT, TATTConfig
from stisr.models.sr.tbsrn import TBSRN, TBSRNConfig
from stisr.models.sr.tpgsr import TPGSR, TPGSRConfig
from stisr.models.sr.tsrn import TSRN, TSRNConfig
from stisr.models.sr.vdsr import VDSR, VDSRConfig

SR_MODELS: dict[str, tuple[type, type]] = {
    "bicubic": (BicubicConfig, Bicubic),
    "edsr": (EDSRConfig, EDSR),
    "lapsrn": (LapSRNConfig, LapSRN),
    "lemma": (LEMMAConfig, LEMMA),
    "rdn": (RDNConfig, RDN),
    "rrdb": (RRDBConfig, RRDBNet),
    "srcnn": (SRCNNConfig, SRCNN),
    "srresnet": (SRResNetConfig, SRResNet),
    "tatt": (TATTConfig, TATT),
    "tbsrn": (TBSRNConfig, TBSRN),
    "tpgsr": (TPGSRConfig, TPGSR),
    "tsrn": (TSRNConfig, TSRN),
    "vdsr": (VDSRConfig, VDSR),
}
REC_MODELS: dict[str, tuple[type, type]] = {
    "abinet": (ABINetConfig, ABINet),
    "aster": (ASTERConfig, ASTER),
    "crnn": (CRNNConfig, CRNN),
    "matrn": (MATRNConfig, MATRN),
    "moran": (MORANConfig, MORAN),
    "parseq": (PARSeqConfig, PARSeq),
    "stt_transformer": (STTTransformerConfig, STTTransformer),
    "svtr": (SVTRConfig, SVTR),
}
PARAMETER_FREE = {"bicubic"}


class ModelConfigError(TypeError, ValueError):
    """A model config with unknown keys or bad values (both a TypeError and a ValueError)."""


def _lookup(name: str) -> tuple[type, type]:
    if name in SR_MODELS:
        return SR_MODELS[name]
    if name in REC_MODELS:
        return REC_MODELS[name]
    known = ", ".join(sorted([*SR_MODELS, *REC_MODELS]))
    raise KeyError(f"unknown model {name!r}; known models: {known}")


def is_implemented(name: str) -> bool:
    """True when `name` can be built."""
    return name in SR_MODELS or name in REC_MODELS


def model_class(name: str) -> type:
    """The nn.Module class of `name` (its class-level objective declarations, no instance)."""
    return _lookup(name)[1]


def model_task(name: str) -> str:
    """'sr' or 'rec'; KeyError for unknown names."""
    _lookup(name)
    return "sr" if name in SR_MODELS else "rec"


def build_config(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """The model's config dataclass with `config` overrides; errors name the key and the model."""
    config_cls, _ = _lookup(name)
    overrides = dict(config or {})
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise ModelConfigError(
            f"unknown config key(s) {unknown} for model {name!r}; valid keys: {sorted(fields)}"
        )
    try:
        return config_cls(**overrides)
    except (TypeError, ValueError) as err:
        raise ModelConfigError(f"bad config for model {name!r}: {err}") from err


def build_model(name: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate model `name` with its config dataclass updated by `config`."""
    _, model_cls = _lookup(name)
    return model_cls(build_config(name, config))

"""Model registry: building, config overrides, error messages, no import cycles."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import stisr.models
from stisr.models import registry
from stisr.models.registry import (
    PARAMETER_FREE,
    REC_MODELS,
    SR_MODELS,
    build_config,
    build_model,
    is_implemented,
    model_task,
)

SMALL = {
    "tsrn": {"hidden_units": 4, "srb_nums": 1},
    "srresnet": {"num_blocks": 1, "channels": 8},
    "bicubic": {},
}


def test_registries_hold_dataclass_and_module_pairs() -> None:
    assert {"bicubic", "tsrn", "srresnet"} <= set(SR_MODELS)
    assert "crnn" in REC_MODELS
    assert not set(SR_MODELS) & set(REC_MODELS)
    for config_cls, model_cls in [*SR_MODELS.values(), *REC_MODELS.values()]:
        assert dataclasses.is_dataclass(config_cls)
        assert issubclass(model_cls, nn.Module)
        config_cls()  # every field has a default


@pytest.mark.parametrize("name", sorted(SMALL))
def test_build_sr_models_with_overrides(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, SMALL[name])
    assert model_task(name) == "sr" and is_implemented(name)
    assert model.scale_factor == 2
    # batch 2: the STN's BatchNorm1d cannot train on a single sample
    assert model(torch.rand(2, 4, 16, 64)).shape == (2, 4, 32, 128)
    n_params = sum(p.numel() for p in model.parameters())
    assert (n_params == 0) == (name in PARAMETER_FREE)


def test_build_applies_overrides_and_coerces_lists() -> None:
    model = build_model("tsrn", {"srb_nums": 2, "hidden_units": 4, "stn_input_size": [32, 64]})
    assert model.config.srb_nums == 2 and model.config.stn_input_size == (32, 64)
    assert hasattr(model, "block3") and not hasattr(model, "block6")
    crnn = build_model("crnn", {"cnn_widths": [4, 8, 8, 8, 16, 16, 16], "hidden": 8})
    assert model_task("crnn") == "rec"
    assert crnn.config.cnn_widths == (4, 8, 8, 8, 16, 16, 16)
    assert build_config("crnn", None) == REC_MODELS["crnn"][0]()


def test_unknown_config_key_names_key_and_model() -> None:
    for exc in (TypeError, ValueError):
        with pytest.raises(exc, match=r"srb_num.*'tsrn'"):
            build_model("tsrn", {"srb_num": 3})


def test_bad_config_value_names_field_and_model() -> None:
    with pytest.raises(ValueError, match=r"'tsrn'.*TSRNConfig\.rnn"):
        build_model("tsrn", {"rnn": "cnn"})


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="tsrn") as info:
        build_model("c3stisr")
    assert "crnn" in str(info.value) and "bicubic" in str(info.value)
    assert not is_implemented("c3stisr")
    with pytest.raises(KeyError):
        model_task("c3stisr")


def test_models_never_import_the_registry() -> None:
    root = Path(stisr.models.__file__).parent
    registry_file = Path(registry.__file__).resolve()
    for path in root.rglob("*.py"):
        if path.resolve() == registry_file:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any("registry" in n for n in names), path

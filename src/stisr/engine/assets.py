"""Frozen networks an objective reads (`ctx.assets`) and sub-modules a run starts from.

The planner (`papers/plan.py`) resolves each asset of a run to one of two kinds, per data source:

* `{"kind": "checkpoint", "path": <model.pt>}` - a stisr checkpoint: a run trained in the DAG
  (embedded data: a stand-in) or imported released weights (official data);
* `{"kind": "vgg_features", ...}` - `VGGFeaturesSpec` fields (ImageNet file or seeded random).

An asset may carry `note` and `deviation` (e.g. random VGG features on embedded data); the run's
metrics list the deviations so that the tables fed by the run show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stisr.engine.checkpoint import load_model
from stisr.losses import VGGFeaturesSpec

ASSET_KINDS = ("checkpoint", "vgg_features")


def build_asset(role: str, spec: Mapping[str, Any]) -> nn.Module:
    """The frozen module of one asset (eval mode, no gradients); the global RNG is untouched."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    spec.pop("note", None)
    spec.pop("deviation", None)
    with torch.random.fork_rng(devices=[]):
        if kind == "checkpoint":
            module = load_model(Path(spec["path"]))
        elif kind == "vgg_features":
            module = VGGFeaturesSpec(**spec).build()
        else:
            raise ValueError(f"asset {role!r}: kind must be one of {ASSET_KINDS}, got {kind!r}")
    return module.requires_grad_(False).eval()


def build_assets(specs: Mapping[str, Mapping[str, Any]], device: str) -> dict[str, nn.Module]:
    return {role: build_asset(role, spec).to(device) for role, spec in specs.items()}


def asset_deviations(specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [str(s["deviation"]) for s in specs.values() if s.get("deviation")]


def warm_start(model: nn.Module, path: str, run: str) -> str:
    """Start from every tensor of `path` whose name and shape match the model; the rest keep
    their fresh init. Returns the deviation the run's tables list (the papers train from scratch).
    """
    state = load_model(Path(path)).state_dict()
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"{run}: warm start {path} shares no tensor with {type(model).__name__}")
    model.load_state_dict(matched, strict=False)
    return (
        f"warm-started from {path} ({len(matched)} of {len(own)} tensors by name and shape), "
        "not trained from scratch as in the paper"
    )


def init_submodules(model: nn.Module, sources: Mapping[str, str], run: str) -> None:
    """Load each named sub-module strictly from a checkpoint's weights (partial init).

    A target that is an `nn.ModuleList` (e.g. one TP generator per TPGSR stage) gets the weights
    in every member, so the spec need not know how many stages a scale builds.
    """
    for target, path in sources.items():
        try:
            sub = model.get_submodule(target)
        except AttributeError:
            raise ValueError(
                f"{run}: init_modules names {target!r}, which {type(model).__name__} lacks"
            ) from None
        state = load_model(Path(path)).state_dict()
        members = list(sub) if isinstance(sub, nn.ModuleList) else [sub]
        for member in members:
            try:
                member.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise ValueError(
                    f"{run}: cannot load {path} into sub-module {target!r} (its config must "
                    f"match the checkpoint's): {err}"
                ) from err

"""Training steps per second of our TSRN against the official TextZoom TSRN, on this CPU.

One step = forward + loss + backward + Adam step (lr 1e-3), train mode, at the paper's shapes:
batch 64, LR RGBM 4x16x64 -> SR 4x32x128, STN on, loss = MSE + 1e-4 x gradient profile (TSRN
paper; our `losses: {mse: 1, gradient_profile: 1e-4}` through `TSRN.training_loss`, the official
`ImageLoss(gradient=True, loss_weight=[1, 1e-4])`). Both models see the same tensors and run in the
same process with the same thread count, interleaved (ours, official, ours, ...) after warm-up
steps, so a change of machine load hits both. Two configurations:

* `paper`: BLSTM sequential blocks, PReLU (our defaults). The official module has only a GRU and
  Mish, so its `GruBlock.gru` modules are replaced by `nn.LSTM` of the same sizes and its `mish`
  modules by `nn.PReLU()` after construction (its layout is otherwise untouched);
* `code`: the official defaults, bidirectional GRU and Mish (`rnn="gru", activation="mish"`).

Getting the official folder (never copied into this repository):

    git clone https://github.com/JasonBoy1/TextZoom /tmp/TextZoom   # any scratch folder
    mkdir -p /tmp/official/textzoom && cd /tmp/official/textzoom
    git -C /tmp/TextZoom archive f5b887b3be7c94db85a2687824c9c8eb06b4b6c3 \\
        src/model/tsrn.py src/model/recognizer/tps_spatial_transformer.py \\
        src/model/recognizer/stn_head.py src/loss/image_loss.py | tar -x --strip-components=1
    # -> model/tsrn.py, model/recognizer/{tps_spatial_transformer,stn_head}.py, loss/image_loss.py

Shims applied at import time, in this script only (see `load_official`): `IPython` and
`torchvision` are stubbed in `sys.modules` when absent (the files import `embed` and
`transforms` but never call them); the package `model.recognizer` is registered without running
its `__init__.py` (which pulls in the ASTER recognizer); and the module-level `grid_sample` of
`tps_spatial_transformer.py` calls `F.grid_sample(..., align_corners=True)`, the semantics of the
torch<1.3 it was written for (torch>=1.3 changed the default; the cost is the same either way).

    python benchmarks/train_step_speed.py --official /tmp/official/textzoom --threads 1 2
    python benchmarks/train_step_speed.py --all        # also every other SR model and recognizer
    python benchmarks/train_step_speed.py --smoke      # CI: batch 2, one repeat, ours only

Without `--official` only our side runs (and the output says so). Figures are only comparable on
an otherwise idle CPU: the header prints the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.engine.speed import prepare_model, to_device
from stisr.losses import build_loss
from stisr.models.objective import Context
from stisr.models.registry import PARAMETER_FREE, REC_MODELS, SR_MODELS, build_model

TSRN_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {"rnn": "lstm", "activation": "prelu"},
    "code": {"rnn": "gru", "activation": "mish"},
}
TSRN_LOSS = {"mse": 1.0, "gradient_profile": 1.0e-4}
OFFICIAL_PACKAGE = "textzoom_official"
Step = Callable[[], None]


def _stub(name: str, **attrs: Any) -> None:
    """Register an empty module `name` unless the real one can be imported."""
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_official(folder: str | Path) -> tuple[type[nn.Module], type[nn.Module]]:
    """(official TSRN class, official ImageLoss class) from the extracted TextZoom `src/` files."""
    root = Path(folder)
    missing = [
        p
        for p in (
            "model/tsrn.py",
            "model/recognizer/tps_spatial_transformer.py",
            "model/recognizer/stn_head.py",
            "loss/image_loss.py",
        )
        if not (root / p).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{root} lacks {missing}; see this script's docstring")
    _stub("IPython", embed=lambda *a, **k: None)
    _stub("torchvision", transforms=types.SimpleNamespace())
    for name, path in (
        (OFFICIAL_PACKAGE, root / "model"),
        (f"{OFFICIAL_PACKAGE}.recognizer", root / "model/recognizer"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]  # a namespace: the recognizer __init__ is not run
        sys.modules[name] = package
    tps = _load(
        f"{OFFICIAL_PACKAGE}.recognizer.tps_spatial_transformer",
        root / "model/recognizer/tps_spatial_transformer.py",
    )

    def grid_sample(input: Tensor, grid: Tensor, canvas: Tensor | None = None) -> Tensor:
        assert canvas is None  # the only path TSRN takes
        return F.grid_sample(input, grid, align_corners=True)

    tps.grid_sample = grid_sample
    tsrn = _load(f"{OFFICIAL_PACKAGE}.tsrn", root / "model/tsrn.py")
    image_loss = _load(f"{OFFICIAL_PACKAGE}_image_loss", root / "loss/image_loss.py")
    return tsrn.TSRN, image_loss.ImageLoss


def official_tsrn(tsrn_cls: type[nn.Module], config: str) -> nn.Module:
    """The official TSRN (STN on, x2, 4 channels, 5 SRBs, 64 features) in `config`."""
    model = tsrn_cls(scale_factor=2, width=128, height=32, STN=True, srb_nums=5, mask=True)
    if config == "paper":
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.GRU):
                    lstm = nn.LSTM(
                        child.input_size, child.hidden_size, bidirectional=True, batch_first=True
                    )
                    setattr(module, name, lstm)
                elif type(child).__name__ == "mish":
                    setattr(module, name, nn.PReLU())
    return model.train()


def adam_step(model: nn.Module, loss_fn: Callable[[], Tensor]) -> Step:
    """A closure doing one zero_grad + loss + backward + Adam step on `model`."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def ours_tsrn_step(config: str, batch: dict[str, Any], channels_last: bool = True) -> Step:
    """As the engine trains (params.yaml `train.channels_last: true`)."""
    model = prepare_model(build_model("tsrn", TSRN_CONFIGS[config]).train(), "cpu", channels_last)
    ctx = Context(weights=TSRN_LOSS, image_loss=build_loss(TSRN_LOSS))
    return adam_step(
        model, lambda: model.training_loss(to_device(batch, "cpu", channels_last), ctx)[0]
    )


def official_tsrn_step(classes: tuple[type, type], config: str, batch: dict[str, Any]) -> Step:
    model = official_tsrn(classes[0], config)
    loss = classes[1](gradient=True, loss_weight=[1.0, TSRN_LOSS["gradient_profile"]])
    return adam_step(model, lambda: loss(model(batch["lr"]), batch["hr"]))


def interleaved_rates(steps: dict[str, Step], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Steps/s of every closure, `repeats` timed steps each, taken in turns after `warmup`."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            rates[name].append(1.0 / (time.perf_counter() - start))
    return rates


def tsrn_batch(batch_size: int) -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "lr": torch.rand(batch_size, 4, 16, 64),
        "hr": torch.rand(batch_size, 4, 32, 128),
        "label": ["text"] * batch_size,
    }


def tsrn_rates(
    batch_size: int,
    repeats: int,
    warmup: int,
    official: str | Path | None,
    channels_last: bool = True,
) -> dict[str, dict[str, float]]:
    """{config: {"ours": median steps/s, ["official": ..., "ratio": ours/official]}}."""
    classes = load_official(official) if official else None
    batch = tsrn_batch(batch_size)
    result: dict[str, dict[str, float]] = {}
    for config in TSRN_CONFIGS:
        torch.manual_seed(0)
        steps = {"ours": ours_tsrn_step(config, batch, channels_last)}
        if classes is not None:
            steps["official"] = official_tsrn_step(classes, config, batch)
        rates = interleaved_rates(steps, repeats, warmup)
        figures = {name: statistics.median(r) for name, r in rates.items()}
        if "official" in rates:
            # median of the per-turn ratios: robust to load that drifts during the run
            figures["ratio"] = statistics.median(
                a / b for a, b in zip(rates["ours"], rates["official"], strict=True)
            )
        result[config] = figures
    return result


def model_step(name: str, batch_size: int) -> Step:
    """One training step of registry model `name` (default = paper config) at paper shapes."""
    torch.manual_seed(0)
    model = build_model(name).train()
    if name in SR_MODELS:
        batch = tsrn_batch(batch_size)
        ctx = Context(weights={"mse": 1.0}, image_loss=build_loss({"mse": 1.0}))
    else:  # recognizers learn from HR-sized word images
        batch = {"lr": torch.rand(batch_size, 4, 32, 128), "label": ["street"] * batch_size}
        ctx = Context()
    return adam_step(model, lambda: model.training_loss(batch, ctx)[0])


def other_models() -> list[str]:
    return [n for n in sorted(SR_MODELS) if n not in PARAMETER_FREE | {"tsrn"}] + sorted(REC_MODELS)


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, dict[str, float]]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--official", help="folder with the TextZoom files (see the docstring)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--all", action="store_true", help="also time every other model")
    ap.add_argument("--smoke", action="store_true", help="batch 2, one repeat, one warm-up")
    ap.add_argument(
        "--nchw", action="store_true", help="ours without the engine's channels-last layout"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.repeats, args.warmup = 2, 1, 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load}")
    print(f"# batch {args.batch}, {args.repeats} timed steps after {args.warmup} warm-up, median")
    layout = "NCHW" if args.nchw else "channels-last (the engine's default)"
    print(f"# ours: {layout}; official: as written (NCHW)")
    if not args.official:
        print("# no --official folder: our side only")
    results: dict[int, dict[str, dict[str, float]]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        figures = tsrn_rates(args.batch, args.repeats, args.warmup, args.official, not args.nchw)
        results[threads] = figures
        for config, fig in figures.items():
            line = f"tsrn[{config}] threads={threads} ours={fig['ours']:.3f} steps/s"
            if "official" in fig:
                line += f" official={fig['official']:.3f} steps/s ratio={fig['ratio']:.2f}"
            print(line, flush=True)
        if args.all:
            for name in other_models():
                rate = statistics.median(
                    interleaved_rates({name: model_step(name, args.batch)}, args.repeats, 1)[name]
                )
                print(f"{name} threads={threads} ours={rate:.3f} steps/s", flush=True)
    return results


if __name__ == "__main__":
    main()

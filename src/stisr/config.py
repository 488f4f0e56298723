"""params.yaml: loading and schema validation (shared by Snakemake, DVC stages and the CLI).

Validation happens before any job starts; the error names the offending key path so that a
mistyped value never costs a half-finished run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """An invalid params.yaml value; the message names the file and key."""


def _key_path(err: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "<top level>"


PAPERS_DIR = REPO_ROOT / "src" / "stisr" / "papers"


def known_papers() -> list[str]:
    """The paper ids: one spec file each (common.yaml is the shared vocabulary, not a paper)."""
    return sorted(p.stem for p in PAPERS_DIR.glob("*.yaml") if p.stem != "common")


def trainable_recognizers() -> list[str]:
    """Recognizers of common.yaml that are trained (not `external`, e.g. the PP-OCR judge)."""
    common = yaml.safe_load((PAPERS_DIR / "common.yaml").read_text())
    return [name for name, r in common["recognizers"].items() if "model" in r]


def scales() -> tuple[str, ...]:
    """The scale names (smoke, demo, paper), from the schema's `scale` enum."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return tuple(schema["properties"]["scale"]["enum"])


def params_schema() -> dict[str, Any]:
    """The params schema with its enums derived from the specs (one list of each thing)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["$defs"]["paper"]["enum"] = known_papers()
    schema["$defs"]["trainable_recognizer"]["enum"] = trainable_recognizers()
    return schema


def validate_params(params: Mapping[str, Any], where: str = "params.yaml") -> None:
    """Raise ParamsError for the first (deepest) schema violation, naming its key."""
    schema = params_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: -len(e.absolute_path))
    if errors:
        err = errors[0]
        best = jsonschema.exceptions.best_match([err]) or err
        raise ParamsError(
            f"{where}: invalid value at '{_key_path(best)}': {best.message}{_hint(best)}"
        )


def _hint(err: jsonschema.ValidationError) -> str:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: say so instead of a bare type error."""
    if err.validator != "type" or not isinstance(err.instance, str):
        return ""
    try:
        float(err.instance)
    except ValueError:
        return ""
    return f" (YAML reads {err.instance!r} as text: unquote it; exponents need a dot, 1.0e-3)"


def load_params(path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None):
    """Load, apply `overrides` (Snakemake --config style, top-level keys) and validate."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    params.update(overrides or {})
    validate_params(params, str(path))
    return params


def write_effective_params(params: Mapping[str, Any], folder: Path) -> Path:
    """Write the effective params (file + overrides) to `<folder>/<hash>.yaml`, atomically.

    Content-addressed, so a job that reads it reads exactly what the planner used, and an
    unchanged configuration rewrites nothing.
    """
    import hashlib

    from stisr.atomic_io import atomic_write_text

    text = yaml.safe_dump(dict(params), sort_keys=True)
    path = Path(folder) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def work_name(params: Mapping[str, Any]) -> str:
    """The folder that separates outputs of different data sources and scales."""
    return f"{params['source']}-{params['scale']}"


def scale_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    return params["scales"][params["scale"]]


def check_task_overrides(overrides: Any, where: str) -> dict[str, dict[str, Any]]:
    """Validate a run's `scales: {<scale>: {steps: .., lr: ..}}` like `scales.<s>.<task>`.

    Same keys and value ranges as params.yaml, all optional; ParamsError names the key.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    task = schema["$defs"]["task"]
    partial = {
        "type": "object",
        "propertyNames": schema["properties"]["scale"],
        "additionalProperties": {
            "type": "object",
            "additionalProperties": False,
            "properties": task["properties"],
            "not": {"required": ["steps", "epochs"]},
        },
    }
    errors = list(jsonschema.Draft202012Validator(partial).iter_errors(overrides))
    if errors:
        err = min(errors, key=lambda e: -len(e.absolute_path))
        path = ".".join([where, *map(str, err.absolute_path)])
        raise ParamsError(f"invalid value at '{path}': {err.message}")
    return {scale: dict(v) for scale, v in overrides.items()}


def task_settings(params: Mapping[str, Any], task: str, run_scales: Mapping[str, Any]):
    """A run's training settings at this scale: `scales.<scale>.<task>`, then the run's own
    `scales.<scale>` (its `steps` replace the scale's `epochs` and vice versa)."""
    own = dict(run_scales.get(params["scale"], {}))
    base = dict(scale_settings(params)[task])
    if {"steps", "epochs"} & own.keys():
        base.pop("steps", None)
        base.pop("epochs", None)
    return {**base, **own}


def model_config(params: Mapping[str, Any], model: str, spec_config: Mapping[str, Any]):
    """Model config at this scale: the scale's width overrides, then the run's own switches."""
    return {**scale_settings(params)["models"].get(model, {}), **spec_config}

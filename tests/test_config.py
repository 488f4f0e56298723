"""params.yaml validation: a bad value stops everything and names its key."""

from __future__ import annotations

import copy

import pytest
import yaml

from stisr.config import ParamsError, load_params, model_config, validate_params, work_name

from .conftest import REPO


@pytest.fixture()
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_shipped_params_are_valid(params):
    validate_params(params)
    assert work_name(params) == "embedded-demo"


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("scale",), "huge", "scale"),
        (("seed",), -1, "seed"),
        (("scales", "demo", "sr", "batch_size"), "sixteen", "scales.demo.sr.batch_size"),
        (("scales", "smoke", "eval", "max_images"), 0, "scales.smoke.eval.max_images"),
        (("embedded", "sizes", "demo", "textzoom", "easy"), 0, "embedded.sizes.demo.textzoom.easy"),
        (("train", "selection"), "best", "train.selection"),
        (("papers",), ["tsrn", "nope"], "papers.1"),
    ],
)
def test_invalid_value_names_its_key(params, path, value, key):
    bad = copy.deepcopy(params)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        validate_params(bad)


def test_unknown_key_is_rejected(params):
    bad = copy.deepcopy(params)
    bad["scales"]["demo"]["sr"]["stpes"] = 3
    with pytest.raises(ParamsError, match=r"scales\.demo\.sr"):
        validate_params(bad)


def test_steps_and_epochs_are_exclusive(params):
    bad = copy.deepcopy(params)
    bad["scales"]["demo"]["sr"]["epochs"] = 3
    with pytest.raises(ParamsError, match=r"scales\.demo\.sr"):
        validate_params(bad)


def test_load_params_overrides_and_missing_file(tmp_path):
    p = load_params(REPO / "params.yaml", {"scale": "smoke"})
    assert p["scale"] == "smoke"
    assert model_config(p, "tsrn", {"use_stn": False}) == {
        "hidden_units": 8,
        "srb_nums": 1,
        "use_stn": False,
    }
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "bad.yaml").write_text("scale: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")

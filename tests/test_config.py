"""params.yaml validation: a bad value stops everything and names its key."""

from __future__ import annotations

import copy
import re

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
        # wrong types
        (("seed",), 1.5, "seed"),
        (("seed",), True, "seed"),  # a YAML boolean is not an integer
        (("source",), 3, "source"),
        (("train", "amp"), "maybe", "train.amp"),
        (("train", "num_workers"), "four", "train.num_workers"),
        (("scales", "demo", "eval", "max_images"), "all", "scales.demo.eval.max_images"),
        (("scales", "demo", "models"), [], "scales.demo.models"),
        (("scales", "demo", "recognizers"), ["crnn", "nope"], "scales.demo.recognizers.1"),
        # out of range
        (("train", "num_workers"), -2, "train.num_workers"),
        (("train", "grad_clip"), 0, "train.grad_clip"),
        (("train", "holdout"), 1.5, "train.holdout"),
        (("scales", "demo", "sr", "lr"), -1.0, "scales.demo.sr.lr"),
        (("embedded", "sizes", "smoke", "str", "ic13"), 0, "embedded.sizes.smoke.str.ic13"),
        (("papers",), [], "papers"),
    ],
)
def test_invalid_value_names_its_key(params, path, value, key):
    bad = copy.deepcopy(params)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=rf"invalid value at '{re.escape(key)}': "):
        validate_params(bad)


def test_number_written_as_yaml_text_gets_a_hint(tmp_path):
    text = (REPO / "params.yaml").read_text()
    bad = text.replace("lr: 1.0e-3, checkpoint_every: 250", "lr: 1e-3, checkpoint_every: 250")
    assert bad != text
    (tmp_path / "params.yaml").write_text(bad)
    with pytest.raises(ParamsError, match=r"'scales\.demo\.sr\.lr'.*exponents need a dot"):
        load_params(tmp_path / "params.yaml")


def test_missing_required_key_names_its_parent(params):
    bad = copy.deepcopy(params)
    del bad["scales"]["demo"]["sr"]["batch_size"]
    with pytest.raises(ParamsError, match=r"'scales\.demo\.sr': 'batch_size' is a required"):
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


def test_paper_and_recognizer_enums_come_from_the_specs(params):
    """One list of each thing: a new spec file or trained recognizer needs no schema edit."""
    from stisr.config import known_papers, trainable_recognizers
    from stisr.papers.spec import load_common, load_specs

    assert known_papers() == sorted(load_specs())
    common = load_common().recognizers
    assert set(trainable_recognizers()) == {r for r in common if r != "ppocr"}
    bad = {**params, "papers": ["tsrn", "nope"]}
    with pytest.raises(ParamsError, match=r"'papers\.1'.*'nope' is not one of .*'tsrn'"):
        validate_params(bad)

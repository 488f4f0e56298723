"""environment.yml (conda, GPU cluster) and requirements.txt (pip) pin the same versions."""

from __future__ import annotations

import re

import yaml

from .conftest import REPO


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_conda_and_pip_pins_agree():
    pip = _pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    assert pip, "requirements.txt pins nothing"
    assert conda == pip


def test_torch_is_pinned_exactly():
    pip = _pins((REPO / "requirements.txt").read_text().splitlines())
    assert pip["torch"] == "2.13.0"

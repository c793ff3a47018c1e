"""The TRES/components file: validation and unit conversion (pure)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from waldur_slurm.domain.components import Component, ComponentsError, load_components, parse_components

EXAMPLE = Path(__file__).resolve().parents[2] / "config-components.yaml.example"


def spec(**overrides):
    base = {"limit": 10, "measured_unit": "k-Hours", "accounting_type": "usage", "label": "CPU"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_example_file_loads_and_its_comments_agree_with_its_factors():
    components = load_components(EXAMPLE)
    assert set(components) == {"cpu", "mem", "gres/gpu"}
    # Every "N <unit> = M <slurm unit>" comment must equal limit x unit_factor.
    text = EXAMPLE.read_text()
    claims = re.findall(r"^(\S+):\n  limit: (\d+)\s+# \d+ \S+ = (\d+) ", text, re.M)
    assert len(claims) == 3
    for key, limit, minutes in claims:
        assert components[key].limit == Decimal(limit)
        assert components[key].slurm_limit == int(minutes)
    # The header's derivations: CPU k-Hours, RAM GB-Hours, GPU-Hours.
    assert components["cpu"].unit_factor == 1000 * 60
    assert components["mem"].unit_factor == 1024 * 60
    assert components["gres/gpu"].unit_factor == 60


def test_original_format_without_unit_factor_keeps_original_numbers():
    c = parse_components({"cpu": spec(limit=16000)}, "f.yaml")["cpu"]
    assert c.unit_factor == 1
    assert c.slurm_limit == 16000
    assert c.to_waldur(16000) == Decimal("16000.00")


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"cpu ": spec()}, "key 'cpu ': not a SLURM TRES name"),
        ({"gpu": spec()}, "key 'gpu': not a SLURM TRES name"),
        ({"cpu": spec(accounting_type="fixed")}, "accounting_type 'fixed' is invalid"),
        ({"cpu": spec(limit=-1)}, "limit -1 must be a non-negative number"),
        ({"cpu": spec(limit="lots")}, "limit 'lots' must be a non-negative number"),
        ({"cpu": spec(unit_factor=0)}, "unit_factor 0 must be a positive integer"),
        ({"cpu": spec(unit_factor=1.5)}, "unit_factor 1.5 must be a positive integer"),
        ({"cpu": spec(label=None)}, "field 'label' must be a non-empty string"),
        ({"cpu": spec(colour="red")}, "unknown field(s) colour"),
        ({"cpu": "10"}, "key 'cpu': expected a mapping"),
        ([], "expected a mapping of TRES names"),
    ],
)
def test_invalid_files_name_the_key_and_problem(data, expected):
    with pytest.raises(ComponentsError) as info:
        parse_components(data, "tres.yaml")
    assert "tres.yaml" in str(info.value)
    assert expected in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cpu: [unclosed\n")
    with pytest.raises(ComponentsError, match=r"bad.yaml: invalid YAML at line"):
        load_components(bad)
    with pytest.raises(ComponentsError, match="file not found"):
        load_components(tmp_path / "none.yaml")


def test_gres_and_license_keys_are_accepted():
    data = {"gres/gpu": spec(), "license/matlab": spec(), "billing": spec()}
    assert set(parse_components(yaml.safe_load(yaml.safe_dump(data)), "f")) == set(data)


@pytest.mark.parametrize(
    "factor, amount, minutes",
    [(60000, "10", 600000), (60000, "0.5", 30000), (61440, "1000", 61440000), (60, "2.25", 135), (1, 7, 7), (60000, 0.1, 6000)],
)
def test_waldur_to_slurm_and_back_is_exact(factor, amount, minutes):
    c = Component("cpu", "CPU", "k-Hours", "limit", None, factor)
    assert c.to_slurm(amount) == minutes
    assert c.to_waldur(minutes) == Decimal(str(amount)).quantize(Decimal("0.01"))


def test_usage_conversion_rounds_to_cents():
    c = Component("cpu", "CPU", "k-Hours", "usage", None, 60000)
    assert c.to_waldur(1) == Decimal("0.00")
    assert c.to_waldur(300) == Decimal("0.01")  # 0.005 rounds half up
    assert c.to_waldur(Decimal("599.99")) == Decimal("0.01")


@pytest.mark.parametrize("bad", ["-1", "abc", "NaN", "Infinity", None, True])
def test_to_slurm_refuses_bad_amounts(bad):
    c = Component("cpu", "CPU", "k-Hours", "limit", None, 60)
    with pytest.raises(ValueError):
        c.to_slurm(bad)

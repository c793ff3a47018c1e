"""--load-components against the Waldur stand-in (real HTTP): create, idempotence, update, extras, dry run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from waldur_standin.testing import StandIn

from waldur_slurm.tools import load_components
from waldur_slurm.config import load_settings

REPO = Path(__file__).resolve().parents[2]
CREATE = "/api/marketplace-provider-offerings/{uuid}/create_offering_component/"
UPDATE = "/api/marketplace-provider-offerings/{uuid}/update_offering_component/"
REMOVE = "/api/marketplace-provider-offerings/{uuid}/remove_offering_component/"

TRES = """\
cpu:
  limit: 10
  measured_unit: k-Hours
  accounting_type: usage
  label: CPU
  unit_factor: 60000
mem:
  limit: 1000
  measured_unit: GB-Hours
  accounting_type: usage
  label: RAM
  unit_factor: 61440
gres/gpu:
  measured_unit: GPU-Hours
  accounting_type: limit
  label: GPU
  unit_factor: 60
"""


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with StandIn(profile="8") as w:
        yield w


@pytest.fixture
def waldur(standin: StandIn) -> StandIn:
    standin.reset()
    return standin


def environ(w: StandIn, offering: str, tres: Path, **extra: str) -> dict[str, str]:
    return {"WALDUR_API_URL": w.url + "/api/", "WALDUR_API_TOKEN": w.provider_token, "WALDUR_OFFERING_UUID": offering,
            "SLURM_TRES_CONFIG_PATH": str(tres), **extra}


def load(w: StandIn, offering: str, tres: Path, **kwargs: bool) -> tuple[int, str]:
    out = io.StringIO()
    settings = load_settings(environ(w, offering, tres))
    code = load_components.run(settings, out=out, **kwargs)
    return code, out.getvalue()


def lines(out: str) -> list[str]:
    """Output lines with runs of blanks squeezed (the table's column widths vary)."""
    return [" ".join(line.split()) for line in out.splitlines()]


def components(w: StandIn, offering: str) -> dict[str, dict]:
    state = w.state()
    found = [state["components"][uuid] for uuid in state["offerings"][offering]["components"]]
    return {c["type"]: c for c in found}


def test_create_then_second_run_changes_nothing(waldur, tmp_path):
    offering = waldur.setup_offering(components=[])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    code, out = load(waldur, offering, tres)
    assert code == 0, out
    assert waldur.count("POST", CREATE) == 3
    assert "3 created" in out.splitlines()[-1]
    state = components(waldur, offering)
    assert set(state) == {"cpu", "mem", "gres/gpu"}
    cpu = state["cpu"]
    assert (cpu["name"], cpu["measured_unit"], cpu["billing_type"], Decimal(str(cpu["limit_amount"]))) == (
        "CPU", "k-Hours", "usage", Decimal("10"))
    assert state["gres/gpu"]["billing_type"] == "limit" and state["gres/gpu"]["limit_amount"] is None
    assert [line.split()[:2] for line in out.splitlines() if line.startswith(("cpu ", "mem ", "gres/gpu "))] == [
        ["cpu", "created"], ["mem", "created"], ["gres/gpu", "created"]]

    waldur.clear_requests()
    code, out = load(waldur, offering, tres)
    assert code == 0, out
    assert out.splitlines()[-1] == f"nothing to change: the offering's components match {tres}"
    assert [(r["method"], r["route"]) for r in waldur.requests()] == [
        ("GET", "/api/marketplace-provider-offerings/{uuid}/")]  # one read, no write


def test_changed_file_updates_only_what_differs(waldur, tmp_path):
    offering = waldur.setup_offering(components=[
        {"type": "cpu", "name": "Cores", "measured_unit": "k-Hours", "billing_type": "usage", "limit_amount": 5,
         "unit_factor": 60000, "description": "typed in the UI"},
        {"type": "mem", "name": "RAM", "measured_unit": "GB-Hours", "billing_type": "usage", "limit_amount": 1000},
        {"type": "gres/gpu", "name": "GPU", "measured_unit": "GPU-Hours", "billing_type": "limit",
         "limit_amount": 7},
    ])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    code, out = load(waldur, offering, tres)
    assert code == 0, out
    assert waldur.count("POST", UPDATE) == 1 and waldur.count("POST", CREATE) == 0
    assert "cpu updated name: 'Cores' -> 'CPU', limit_amount: 5 -> 10" in lines(out)
    assert "1 updated, 2 unchanged" in out.splitlines()[-1]
    state = components(waldur, offering)
    assert state["cpu"]["name"] == "CPU" and Decimal(str(state["cpu"]["limit_amount"])) == 10
    # Fields the file does not determine are kept.
    assert state["cpu"]["description"] == "typed in the UI" and state["cpu"]["unit_factor"] == 60000
    assert Decimal(str(state["gres/gpu"]["limit_amount"])) == 7  # no limit in the file: Waldur's stays
    waldur.clear_requests()
    assert load(waldur, offering, tres)[0] == 0
    assert waldur.count("POST") == 0


def test_extra_component_is_reported_and_removed_only_with_the_flag(waldur, tmp_path):
    offering = waldur.setup_offering(components=[
        {"type": "cpu", "name": "CPU", "measured_unit": "k-Hours", "billing_type": "usage", "limit_amount": 10},
        {"type": "node", "name": "Nodes", "measured_unit": "node-Hours", "billing_type": "usage"},
    ])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES.split("mem:")[0])  # cpu only
    code, out = load(waldur, offering, tres)
    assert code == 0, out
    assert "node" in components(waldur, offering)
    assert waldur.count("POST") == 0
    assert "node extra not in the TRES file (--remove-missing removes it)" in lines(out)
    assert out.splitlines()[-1].endswith("; 1 extra in Waldur")

    code, out = load(waldur, offering, tres, dry_run=True, remove_missing=True)
    assert code == 0 and "would remove" in out and "node" in components(waldur, offering)
    assert waldur.count("POST") == 0

    code, out = load(waldur, offering, tres, remove_missing=True)
    assert code == 0, out
    assert set(components(waldur, offering)) == {"cpu"}
    assert waldur.count("POST", REMOVE) == 1
    assert "node removed" in lines(out)


def test_dry_run_changes_nothing(waldur, tmp_path):
    offering = waldur.setup_offering(components=[
        {"type": "cpu", "name": "Cores", "measured_unit": "k-Hours", "billing_type": "usage", "limit_amount": 5}])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    before = components(waldur, offering)
    code, out = load(waldur, offering, tres, dry_run=True)
    assert code == 0, out
    assert waldur.count("POST") == 0
    assert components(waldur, offering) == before
    shown = lines(out)
    assert "cpu would update name: 'Cores' -> 'CPU', limit_amount: 5 -> 10" in shown, out
    assert "mem would create name='RAM', measured_unit='GB-Hours', billing_type='usage', limit_amount=1000" in shown
    assert shown[-1] == "2 would create, 1 would update (dry run: nothing was changed)"


def run_cli(w: StandIn, offering: str, tres: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALDUR_", "SLURM_", "SENTRY_"))}
    env.update(environ(w, offering, tres, PYTHONPATH=str(REPO)))
    return subprocess.run([sys.executable, "-m", "waldur_slurm.main", "--load-components", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tres.parent)


def test_cli_refuses_a_bad_file_naming_the_key(waldur, tmp_path):
    offering = waldur.setup_offering(components=[])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES.replace("accounting_type: limit", "accounting_type: sometimes"))
    result = run_cli(waldur, offering, tres)
    assert result.returncode == 2
    assert "'gres/gpu'" in result.stderr and "accounting_type 'sometimes' is invalid" in result.stderr
    assert waldur.requests() == []  # refused before talking to Waldur
    assert components(waldur, offering) == {}


def test_cli_creates_and_a_bad_token_is_a_clear_error(waldur, tmp_path):
    offering = waldur.setup_offering(components=[])
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    result = run_cli(waldur, offering, tres)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 created" in result.stdout
    assert set(components(waldur, offering)) == {"cpu", "mem", "gres/gpu"}

    waldur.expire_token(waldur.provider_user_uuid)
    result = run_cli(waldur, offering, tres)
    assert result.returncode == 3
    assert "Waldur refused the API token" in result.stdout
    assert waldur.provider_token not in result.stdout + result.stderr

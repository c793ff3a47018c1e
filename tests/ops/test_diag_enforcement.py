"""--diag shows enforcement: the flags Waldur 8 sets and what the agent holds; on 2024 that it is not available."""

from __future__ import annotations

import io
import json
from pathlib import Path

from waldur_standin.testing import StandIn

from tests.ops.test_diag import TRES, environ, parse
from waldur_slurm.tools import diag
from waldur_slurm.config import load_settings
from waldur_slurm.tools.load_components import run as load_components


def _diag(w: StandIn, tmp_path: Path, state_dir: Path) -> dict[str, tuple[bool, str]]:
    tres = tmp_path / "tres.yaml"
    tres.write_text(TRES)
    offering = w.setup_offering(components=[])
    env = environ(w, offering, tres, "root", WALDUR_STATE_DIR=str(state_dir), SLURM_DOWNSCALED_QOS="slow")
    assert load_components(load_settings(env), out=io.StringIO()) == 0
    project = w.add_project(w.add_customer("C"), "P")
    uuids = w.create_resources(offering, project, 3, backend_ids=["a1", "a2", "a3"])
    if w.profile == "8":
        assert w.set_resource_flag(uuids[0], "paused", True) == 200
        assert w.set_resource_flag(uuids[1], "paused", True) == 200
        assert w.set_resource_flag(uuids[2], "downscaled", True) == 200
    out = io.StringIO()
    diag.run(load_settings(env), out=out)
    return parse(out.getvalue())


def test_diag_counts_the_flags_and_the_agents_records(standin: StandIn, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "enforcement.json").write_text(json.dumps({"accounts": {"a1": {"paused": {"grp_jobs": None}}}}))
    ok, detail = _diag(standin, tmp_path, state_dir)["enforcement"]
    assert ok, detail
    assert "Waldur flags 2 paused, 1 downscaled, 0 restricted" in detail
    assert "the agent holds 1 paused (GrpJobs=0 GrpSubmitJobs=0), 0 in QoS slow, 0 with members removed" in detail


def test_diag_on_2024_says_enforcement_is_not_available(standin_2024: StandIn, tmp_path: Path) -> None:
    ok, detail = _diag(standin_2024, tmp_path, tmp_path / "state")["enforcement"]
    assert ok and detail.startswith("not available on this server: 2024 servers")

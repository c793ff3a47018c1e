"""--diag-account against the real cluster and the stand-in (both profiles).

An allocation made by the pull daemon matches; then SLURM drifts by hand (a user's association removed, the
GrpTRESMins changed) and a real job runs: every difference is marked, and running the printed ``sacctmgr``
commands for real makes SLURM match again (only the usage difference, which the push daemon reports, is left).
Reads only: no Waldur write, one ``sacctmgr`` dump and one ``sacct``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from tests.pull.conftest import PullEnv, env_vars
from tests.push.conftest import expected_usage, raw_sacct
from tests.support.slurm import CLIENT_TIMEOUT, submit_job, wait_jobs_in_sacct
from waldur_slurm.tools import diag_account
from waldur_slurm.tools.diag_account import diagnose
from waldur_slurm.main import main
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.push.usage import billing_window

pytestmark = pytest.mark.slurm
UTC = timezone.utc
# the stand-in offering's component types and billing types, in TRES-minutes so that short jobs show
MINUTES_TRES = """\
cpu: {label: CPU, measured_unit: CPU-minutes, accounting_type: limit, unit_factor: 1}
mem: {label: RAM, measured_unit: MB-minutes, accounting_type: usage, unit_factor: 1, limit: 100000}
gres/gpu: {label: GPU, measured_unit: GPU-minutes, accounting_type: limit, unit_factor: 1}
"""


def _writes(env: PullEnv, since: int) -> list[str]:
    return [f"{e['method']} {e['path']}" for e in env.standin.requests()[since:] if e["method"] != "GET"]


def test_diag_account_marks_every_difference_and_its_commands_make_slurm_match(pull_env: PullEnv) -> None:
    env = pull_env
    env.tres_path.write_text(MINUTES_TRES)
    # logins of this test only: the test cluster's Linux users are shared, and so are their default accounts
    _, alice = env.user("a")
    _, bob = env.user("b")
    order = env.order(name="diag me", limits={"cpu": 5, "gres/gpu": 1})
    assert env.reconciler().run_cycle().done == 1
    res_uuid = order["resource_uuid"]
    account = env.waldur_resource(res_uuid)["backend_id"]
    settings, waldur = env.settings(), env.waldur()
    slurm = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)

    # just made by the pull daemon: everything matches, by account name or by resource UUID (dashed or not)
    since = len(env.standin.requests())
    diag = diagnose(settings, waldur, slurm, account.upper(), datetime.now(UTC))
    assert diag.differences == [] and diag.commands == [], [d.detail for d in diag.differences]
    assert slurm.executor.process_count == 2  # one sacctmgr dump, one sacct
    assert _writes(env, since) == []
    assert diag.slurm["users"] == diag.waldur["expected_users"] == sorted([alice, bob])
    assert diag.slurm["grp_tres_mins"] == diag.waldur["grp_tres_mins"] == {"cpu": 5, "gres/gpu": 1, "mem": 100000}
    assert diag.slurm["tree"][-4:] == diag.waldur["tree"] == [env.root, f"hpc_{env.customer}", f"hpc_{env.project}", account]
    dashed = f"{res_uuid[:8]}-{res_uuid[8:12]}-{res_uuid[12:16]}-{res_uuid[16:20]}-{res_uuid[20:]}"
    assert diagnose(settings, waldur, slurm, dashed, datetime.now(UTC)).account == account
    if env.profile == "2024":
        assert diag.waldur["associations"] == sorted([alice, bob])
    else:
        assert diag.waldur["associations"] is None

    # SLURM drifts: bob's association removed and the CPU limit changed by hand; an admin's manual association
    # (a Linux user of the test cluster, unknown to the offering: never a membership difference) runs a real job
    subprocess.run(["sacctmgr", "-i", "remove", "user", bob, f"account={account}"], check=True, capture_output=True)
    subprocess.run(["sacctmgr", "-i", "modify", "account", account, "set", "GrpTRESMins=cpu=99"], check=True,
                   capture_output=True)
    subprocess.run(["sacctmgr", "-i", "add", "user", "wsa_dave", f"account={account}"], check=True, capture_output=True)
    wait_jobs_in_sacct([submit_job("wsa_dave", account, cpus=2, mem_mb=120, seconds=3)])
    now = datetime.now(UTC)
    before = slurm.executor.process_count
    since = len(env.standin.requests())
    drift = diagnose(settings, waldur, slurm, res_uuid, now)
    assert slurm.executor.process_count - before == 2 and _writes(env, since) == []
    kinds = sorted({d.what for d in drift.differences})
    assert kinds == sorted(["users", "limits", "usage"] + (["associations"] if env.profile == "2024" else []))
    assert drift.commands[0].startswith(f"sacctmgr -i add user {bob} account={account}")
    assert drift.commands[1:] == [f"sacctmgr -i modify account where name={account} set GrpTRESMins=cpu=5"]
    window = billing_window(now, settings.billing_timezone)
    totals, _users = expected_usage(raw_sacct([account], window.start, window.end), {"cpu": 1, "mem": 1, "gres/gpu": 1})
    assert drift.slurm["usage"]["totals"] == {k: f"{totals.get((account, k), Decimal(0)):.2f}" for k in ("cpu", "gres/gpu", "mem")}
    assert drift.waldur["usage"]["totals"] == {}
    assert sorted(drift.slurm["users"]) == sorted([alice, "wsa_dave"]) and drift.waldur["expected_users"] == sorted([alice, "wsa_dave"] + [bob])
    text = "\n".join(diag_account.render_text(drift))
    assert "✘ users" in text and "✘ GrpTRESMins" in text and "✘ usage" in text and drift.commands[1] in text

    # the printed commands, run for real, make SLURM match: only what the push daemon reports is left (the usage;
    # on 2024 also the admin's association, which Waldur does not hold yet)
    for command in drift.commands:
        subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=60)
    fixed = diagnose(settings, waldur, slurm, account, now)
    assert {d.what for d in fixed.differences} == {"usage"} | ({"associations"} if env.profile == "2024" else set())
    assert fixed.commands == [] and sorted(fixed.slurm["users"]) == sorted([alice, bob, "wsa_dave"])
    assert fixed.slurm["grp_tres_mins"] == {"cpu": 5, "gres/gpu": 1, "mem": 100000}


def test_diag_account_json_is_stable_and_unknown_names_exit_2(pull_env_8: PullEnv, capsys: pytest.CaptureFixture[str]) -> None:
    env = pull_env_8
    env.tres_path.write_text(MINUTES_TRES)
    env.user("a")
    order = env.order(name="json")
    assert env.reconciler().run_cycle().done == 1
    res_uuid = order["resource_uuid"]
    account = env.waldur_resource(res_uuid)["backend_id"]
    settings = env.settings()
    now = datetime.now(UTC)
    outs: list[list[str]] = [[], []]
    for out in outs:
        assert diag_account.run(settings, account, as_json=True, echo=out.append, now=lambda: now) == 0
    assert outs[0] == outs[1] and len(outs[0]) == 1
    doc = json.loads(outs[0][0])
    assert set(doc) == {"schema", "resource", "account", "period", "server_flavour", "waldur", "slurm", "differences",
                        "commands", "notes", "match"}
    assert doc["match"] is True and doc["account"] == account and doc["resource"]["uuid"] == res_uuid
    assert env.standin.provider_token not in outs[0][0]

    errors: list[str] = []
    assert diag_account.run(settings, "hpc_no_such_account", err=errors.append) == 2
    assert diag_account.run(settings, "f" * 32, err=errors.append) == 2
    assert errors == [
        "waldur-slurm-agent: --diag-account 'hpc_no_such_account': no resource of the offering has this SLURM account as its backend_id",
        f"waldur-slurm-agent: --diag-account '{'f' * 32}': no resource with this UUID in the offering",
    ]
    assert main(["--json"]) == 2
    assert capsys.readouterr().err.strip() == "waldur-slurm-agent: --json goes with --diag-account"
    # through the command line, without WALDUR_SYNC_DIRECTION (a one-shot job needs none); an empty name is
    # an unknown allocation, never a fall-through to the daemon
    env_file = env.tres_path.parent / "diag.env"
    variables = env_vars(env.standin.url, env.standin.provider_token, env.offering, env.root, env.tres_path)
    del variables["WALDUR_SYNC_DIRECTION"]
    env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    assert main(["--diag-account", "", "--env-file", str(env_file)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "waldur-slurm-agent: --diag-account '': no resource of the offering has this SLURM account as its backend_id")
    assert main(["--diag-account", account, "--json", "--env-file", str(env_file)]) == 0
    assert json.loads(capsys.readouterr().out)["account"] == account

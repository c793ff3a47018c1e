"""Grouped user removals against the real cluster: the associations of a user in many accounts go in one
`remove user` command (one slurmdbd transaction) instead of one per account; a default account gets its own
command; unknown or changed defaults fall back to one command per account. Exact process and command counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.slurm import CLIENT_TIMEOUT
from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers, RemoveUsers, SetDefaultAccount

pytestmark = pytest.mark.slurm
N = 60
CHECK_TREE = Path(__file__).resolve().parents[2] / "devenv" / "slurm" / "check-tree"


def commands(output: str) -> list[str]:
    return [line.removeprefix("sacctmgr: ") for line in output.splitlines() if line.startswith("sacctmgr: remove user")]


def setup(slurm_root: str) -> tuple[SlurmClient, tuple[str, ...]]:
    client = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    names = tuple(f"{slurm_root}_r{i:02d}" for i in range(N))
    results = client.apply([
        AddAccounts(names, slurm_root, description="removals", organization="pytest"),
        AddUsers(("wsa_carol", "wsa_dave"), names, default_account=names[0]),
    ])  # fmt: skip
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    return client, names


def users_in(client: SlurmClient, names: tuple[str, ...]) -> dict[str, set[str]]:
    state = client.read_state()
    return {u: {a for a in names if u in state.accounts[a].users} for u in ("wsa_carol", "wsa_dave")}


def test_a_user_leaving_many_accounts_is_one_command(slurm_root: str) -> None:
    client, names = setup(slurm_root)
    client.read_state()  # the defaults: names[0] for both
    before = client.executor.process_count
    [r] = client.apply([RemoveUsers(("wsa_carol", "wsa_dave"), names[1:])])
    assert r.ok, r.error
    assert client.executor.process_count - before == 1
    assert commands(r.output) == [f"remove user where name=wsa_carol,wsa_dave account={','.join(names[1:])}"]
    assert users_in(client, names) == {"wsa_carol": {names[0]}, "wsa_dave": {names[0]}}

    # now the default account itself, with a moved default in the same batch: its own command, after the others
    client.read_state()
    before = client.executor.process_count
    results = client.apply([
        SetDefaultAccount(("wsa_dave",), names[0]),
        RemoveUsers(("wsa_carol",), names[:1]),
    ])  # fmt: skip
    assert all(x.ok for x in results) and client.executor.process_count - before == 1
    assert commands(results[1].output) == [f"remove user where name=wsa_carol account={names[0]}"]
    assert users_in(client, names) == {"wsa_carol": set(), "wsa_dave": {names[0]}}
    assert subprocess.run([str(CHECK_TREE)], capture_output=True, text=True, timeout=120).returncode == 0


def test_removals_including_the_default_split_it_out(slurm_root: str) -> None:
    client, names = setup(slurm_root)
    client.read_state()
    [r] = client.apply([RemoveUsers(("wsa_carol",), names)])
    assert r.ok, r.error
    assert commands(r.output) == [
        f"remove user where name=wsa_carol account={','.join(names[1:])}",
        f"remove user where name=wsa_carol account={names[0]}",
    ]
    assert users_in(client, names)["wsa_carol"] == set()


def test_unknown_or_stale_defaults_fall_back_to_one_command_per_account(slurm_root: str) -> None:
    client, names = setup(slurm_root)
    # A fresh client has read no state: it does not know the defaults, one command per account.
    fresh = SlurmClient(NativeExecutor(), timeout=CLIENT_TIMEOUT)
    [r] = fresh.apply([RemoveUsers(("wsa_dave",), names[40:])])
    assert r.ok and len(commands(r.output)) == N - 40 and fresh.executor.process_count == 1

    # Stale: someone else moved carol's default after this client's dump. The grouped command is refused (all
    # or nothing) and re-run one account per command: one more process, nothing lost.
    client.read_state()
    [moved] = fresh.apply([SetDefaultAccount(("wsa_carol",), names[5])])
    assert moved.ok
    before = client.executor.process_count
    [r] = client.apply([RemoveUsers(("wsa_carol",), names[1:10])])
    assert r.ok, r.error
    assert client.executor.process_count - before == 2
    assert len(commands(r.output)) == 9
    assert users_in(client, names)["wsa_carol"] == {names[0], *names[10:]}

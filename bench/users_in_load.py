"""BENCHMARK-ONLY experiment behind the pull hot spot: N new users' associations as N ``add user`` commands
(what ``pull_plan`` emits today for N orders with distinct teams) against the same associations in ONE
``sacctmgr load`` file (``Parent - '<account>'`` followed by ``User - '<name>':DefaultAccount='<account>'``).

``python -m bench.users_in_load [N]`` (default 100) creates 2N accounts under a bench root, adds two new
users to each of the first N with the agent's own ``SlurmClient.apply([AddUsers ...])`` and to each of the
other N with one load file, checks that both halves ended with the same associations and default accounts,
removes everything, and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time

from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers

from .slurm_side import BENCH_MARK, BENCH_ORG, TAG_PREFIX, cleanup_tag, sh, write_locked


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100
    tag = TAG_PREFIX + secrets.token_hex(3)
    client = SlurmClient(NativeExecutor(), timeout=900)
    accounts = [f"{tag}_{i:05d}_allocation" for i in range(2 * n)]
    results = client.apply([AddAccounts((tag,), "root", description=f"{BENCH_MARK} pid {os.getpid()}",
                                        organization=BENCH_ORG),
                            AddAccounts(tuple(accounts), tag, description="x", organization=BENCH_ORG)])
    assert all(r.ok for r in results), [str(r.error) for r in results]
    try:
        batch = [AddUsers((f"{tag}u{i}a", f"{tag}u{i}b"), (accounts[i],), default_account=accounts[i]) for i in range(n)]
        t0 = time.perf_counter()
        results = client.apply(batch)
        t_batch = time.perf_counter() - t0
        assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok][:3]

        lines = [f"Cluster - '{client.cluster_name()}'"]
        for i in range(n, 2 * n):
            lines.append(f"Parent - '{accounts[i]}'")
            lines += [f"User - '{tag}u{i}{s}':DefaultAccount='{accounts[i]}'" for s in "ab"]
        t0 = time.perf_counter()
        with write_locked():
            r = sh(["sacctmgr", "-i", "load", "file=/dev/stdin"], stdin="\n".join(lines) + "\n", timeout=900)
        t_load = time.perf_counter() - t0
        assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr)[-500:]

        state = client.read_state()
        for i in range(2 * n):
            users = {f"{tag}u{i}a", f"{tag}u{i}b"}
            assert state.accounts[accounts[i]].users == frozenset(users), accounts[i]
            assert all(state.default_account[u] == accounts[i] for u in users), accounts[i]
    finally:
        cleanup_tag(client, tag)
    print(json.dumps({"n": n, "associations": 2 * n, "add_user_commands_s": round(t_batch, 2),
                      "one_load_file_s": round(t_load, 2), "speedup": round(t_batch / t_load, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

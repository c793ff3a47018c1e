"""BENCHMARK-ONLY: user removals in sacctmgr, one command per account against one grouped command, under load.

``python -m bench.removals [N]`` (default 100, as root, on the local cluster) creates N+1 accounts with two
users (default account: the first), starts two readers (``sacctmgr list assoc`` in a loop) and a writer that
adds and removes an account through the agent's write lock, then removes one user from N accounts one
command per account (a client with no dump: the defaults are unknown) and the other user with the grouped
commands (after a dump), and runs ``devenv/slurm/check-tree``. Prints one JSON line; removes what it made.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.ops import AddAccounts, AddUsers, Op, RemoveAccounts, RemoveUsers

CHECK_TREE = Path(__file__).resolve().parents[1] / "devenv" / "slurm" / "check-tree"


def _apply(client: SlurmClient, ops: list[Op]) -> None:
    results = client.apply(ops)
    bad = [str(r.error) for r in results if not r.ok]
    if bad:
        raise SystemExit(f"sacctmgr failed: {bad}")


def main(n: int) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    root, other = f"brm{tag}", f"brw{tag}"
    names = tuple(f"{root}_{i:04d}" for i in range(n + 1))
    client = SlurmClient(NativeExecutor(), timeout=1800)
    _apply(client, [AddAccounts((root, other), "root", description="bench removals", organization="bench")])
    try:
        _apply(client, [AddAccounts(names, root, description="bench", organization="bench"),
                        AddUsers(("wsa_alice", "wsa_bob"), names, default_account=names[0])])
        stop = threading.Event()
        counts = {"reads": 0, "write_cycles": 0}

        def reader() -> None:
            while not stop.is_set():
                subprocess.run(["sacctmgr", "-n", "-P", "list", "assoc", "format=account,user"], capture_output=True)
                counts["reads"] += 1

        def writer() -> None:
            w = SlurmClient(NativeExecutor(), timeout=600)
            i = 0
            while not stop.is_set():
                one = (f"{other}_{i:04d}",)
                _apply(w, [AddAccounts(one, other, description="w", organization="bench"), AddUsers(("wsa_carol",), one)])
                _apply(w, [RemoveAccounts(one)])
                counts["write_cycles"] += 1
                i += 1

        threads = [threading.Thread(target=reader), threading.Thread(target=reader), threading.Thread(target=writer)]
        for t in threads:
            t.start()
        try:
            fresh = SlurmClient(NativeExecutor(), timeout=1800)  # no dump: one command per account
            started = time.monotonic()
            _apply(fresh, [RemoveUsers(("wsa_alice",), names[1:])])
            per_account = time.monotonic() - started
            client.read_state()
            started = time.monotonic()
            _apply(client, [RemoveUsers(("wsa_bob",), names[1:])])
            grouped = time.monotonic() - started
        finally:
            stop.set()
            for t in threads:
                t.join()
        tree = subprocess.run([str(CHECK_TREE)], capture_output=True, text=True, timeout=300)
        return {"removals": n, "per_account_s": round(per_account, 2), "grouped_s": round(grouped, 2),
                "concurrent_reads": counts["reads"], "concurrent_write_cycles": counts["write_cycles"],
                "check_tree_ok": tree.returncode == 0}
    finally:
        _apply(client, [RemoveAccounts(names), RemoveAccounts((root, other))])


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)))

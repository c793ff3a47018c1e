"""BENCHMARK-ONLY: the pull planner's own time (pure code, no SLURM, no HTTP) against the size of the cluster.

``python -m bench.planning [ORDERS] [CUSTOMERS]`` (defaults 300 and 30) builds a snapshot of CUSTOMERS
customers with 10 projects of 28 allocation accounts each (30 customers: 8,730 accounts, the size of the
push world at N=3,000), then times ``plan_orders`` for ORDERS orders of each type (Create with two new
users each, Update, Terminate) and ``plan_membership`` over every allocation, and prints one JSON line per
case. The planner runs once per pull cycle, before any SLURM or Waldur write.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

from waldur_slurm.domain import naming
from waldur_slurm.domain.components import Component
from waldur_slurm.pull.membership import plan_membership
from waldur_slurm.pull.model import PlanConfig
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.slurm.model import SlurmAccount, SlurmState
from waldur_slurm.waldur.models import OfferingUser, Order, Resource, TeamMember

ROOT = "bench_root"
RULES = naming.NamingRules()
CONFIG = PlanConfig(naming=RULES, default_account=ROOT, components={
    "cpu": Component("cpu", "CPU", "CPU-hours", "limit", None, 60),
})


def _hex() -> str:
    return uuid.uuid4().hex


def _order(kind: str, resource: str, customer: str, project: str) -> Order:
    return Order.from_json({"uuid": _hex(), "type": kind, "state": "executing", "marketplace_resource_uuid": resource,
                            "resource_uuid": _hex(), "resource_name": "bench", "customer_uuid": customer,
                            "project_uuid": project, "limits": {"cpu": 2}, "created": "2026-01-01T00:00:00"})


def world(customers: int, orders: int, kind: str) -> dict[str, Any]:
    def account(name: str, parent: str, description: str = "", users: frozenset[str] = frozenset()) -> SlurmAccount:
        return SlurmAccount(name=name, parent=parent, description=description, organization="", limits={}, users=users)

    accounts = [account("root", ""), account(ROOT, "root")]
    defaults: dict[str, str] = {}
    planned: list[Order] = []
    resources: list[Resource] = []
    teams: dict[str, list[TeamMember]] = {}
    offering: list[OfferingUser] = []
    for _ in range(customers):
        cust = _hex()
        cust_acc = naming.customer_account(RULES, cust)
        accounts.append(account(cust_acc, ROOT, naming.customer_marker(cust)))
        for _ in range(10):
            proj = _hex()
            proj_acc = naming.project_account(RULES, proj)
            accounts.append(account(proj_acc, cust_acc, naming.project_marker(proj)))
            for _ in range(28):
                res = _hex()
                name, user = f"hpc_{res[:8]}", f"u{res[:8]}"
                accounts.append(account(name, proj_acc, naming.resource_marker(res), users=frozenset({user})))
                defaults[user] = name
                resources.append(Resource.from_json({"uuid": res, "backend_id": name, "state": "OK",
                                                     "project_uuid": proj, "customer_uuid": cust}))
                user_uuid = _hex()
                offering.append(OfferingUser.from_json({"uuid": _hex(), "user_uuid": user_uuid, "username": user}))
                teams[res] = [TeamMember.from_json({"uuid": user_uuid, "username": user})]
                if len(planned) < orders and kind in ("Update", "Terminate"):
                    planned.append(_order(kind, res, cust, proj))
            if len(planned) < orders and kind == "Create":
                res = _hex()
                members = [_hex(), _hex()]
                offering += [OfferingUser.from_json({"uuid": _hex(), "user_uuid": m, "username": f"n{m[:8]}"})
                             for m in members]
                teams[res] = [TeamMember.from_json({"uuid": m, "username": f"n{m[:8]}"}) for m in members]
                planned.append(_order("Create", res, cust, proj))
    return {"state": SlurmState(accounts={a.name: a for a in accounts}, default_account=defaults), "orders": planned, "resources": resources,
            "teams": teams, "offering": offering}


def main(argv: list[str]) -> int:
    orders = int(argv[0]) if argv else 300
    customers = int(argv[1]) if len(argv) > 1 else 30
    for kind in ("Create", "Update", "Terminate", "membership"):
        w = world(customers, orders, kind)
        started = time.perf_counter()
        if kind == "membership":
            plan: Any = plan_membership(w["resources"], w["state"], CONFIG, teams=w["teams"], offering_users=w["offering"])
            count = len(w["resources"])
        else:
            by_uuid = {r.uuid: r for r in w["resources"]}
            plan = plan_orders(w["orders"], w["state"], CONFIG, resources=by_uuid, teams=w["teams"],
                               offering_users=w["offering"])
            count = len(w["orders"])
        seconds = time.perf_counter() - started
        print(json.dumps({"case": kind, "items": count, "accounts": len(w["state"].accounts), "ops": len(plan.ops),
                          "seconds": round(seconds, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Issue 12 item 1: a JSON integer of more than 4,300 digits in one order fails only that order. Real HTTP: a
tiny server answers the order list with such a limit next to a normal order (the stand-in, itself Python,
cannot even serialise that number)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.unit.test_pull_plan import CONFIG, tree
from waldur_slurm.pull.plan import plan_orders
from waldur_slurm.waldur.client import WaldurClient

OFFERING = uuid.uuid4().hex
HUGE = "9" * 5000


def _order(limit: str) -> str:
    fields = {"uuid": uuid.uuid4().hex, "type": "Create", "state": "executing", "marketplace_resource_uuid": uuid.uuid4().hex,
              "resource_uuid": "a" * 32, "resource_name": "r", "customer_uuid": "c" * 32, "project_uuid": "d" * 32,
              "offering_uuid": OFFERING, "created": "2024-01-01T00:00:00"}
    return json.dumps(fields)[:-1] + f', "limits": {{"cpu": {limit}}}}}'


class _Orders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ("[" + _order(HUGE) + "," + _order("2") + "]").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def orders_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Orders)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_5000_digit_limit_fails_only_its_order(orders_server: str) -> None:
    client = WaldurClient(orders_server, "t" * 40, OFFERING, flavour="8", max_retries=0, sleep=lambda _s: None)
    try:
        huge, normal = client.list_orders()  # before the fix: "HTTP 200 with a non-JSON body" for the whole list
    finally:
        client.close()
    plan = plan_orders([huge, normal], tree(), CONFIG)
    by_uuid = plan.by_uuid()
    assert by_uuid[normal.uuid].works
    erred = by_uuid[huge.uuid].reason if by_uuid[huge.uuid].outcome == "erred" else ""
    assert erred.startswith("limits.cpu = Decimal('9999") and erred.endswith("... is too large")

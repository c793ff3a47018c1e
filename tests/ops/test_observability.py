"""Observability: Sentry against a local DSN endpoint, logging formats, redaction, heartbeat, metrics endpoint."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from waldur_slurm import __version__
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.tools.observability import (
    FILTERED,
    EventFilter,
    Metrics,
    MetricsServer,
    Redactor,
    heartbeat_age,
    setup_logging,
    touch_heartbeat,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "9e1132b9616ebfe943ddf632ca32bbb7e1109a32"


class SentryStub:
    """A local Sentry ingestion endpoint: stores every envelope it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                elif encoding:
                    raise AssertionError(f"unexpected Content-Encoding {encoding}")
                stub.bodies.append(raw)
                stub.headers.append(dict(self.headers))
                body = b'{"id":"0"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.dsn = f"http://a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6@127.0.0.1:{self.httpd.server_address[1]}/42"

    def items(self) -> Iterator[tuple[dict, dict | bytes]]:
        for body in self.bodies:
            lines = io.BytesIO(body)
            lines.readline()  # envelope header
            while True:
                header_line = lines.readline()
                if not header_line.strip():
                    break
                header = json.loads(header_line)
                length = header.get("length")
                payload = lines.read(length) if length is not None else lines.readline()
                if length is not None:
                    lines.readline()
                try:
                    yield header, json.loads(payload)
                except ValueError:
                    yield header, payload

    def events(self) -> list[dict]:
        return [payload for header, payload in self.items() if header.get("type") == "event"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sentry_stub() -> Iterator[SentryStub]:
    stub = SentryStub()
    yield stub
    stub.close()


AGENT = r"""
import logging, sys, threading, types
import sentry_sdk
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.daemon.loop import PeriodicTask, run_loop
from waldur_slurm.tools.observability import setup_logging, setup_sentry

dsn, token = sys.argv[1], sys.argv[2]
settings = types.SimpleNamespace(sentry_dsn=dsn, waldur_api_token=token, sentry_environment="ci-test",
                                 log_level="INFO", log_format="text")
setup_logging(settings)
assert setup_sentry(settings)
log = logging.getLogger("waldur_slurm.test")
sentry_sdk.set_context("request", {"headers": {"Authorization": f"Token {token}"}, "url": "/api/orders/"})
stop = threading.Event()
cycles = 0

def pull(dry_run):
    global cycles
    cycles += 1
    log.info("calling Waldur with token %s", token)  # becomes a breadcrumb
    if cycles >= 3:
        stop.set()
    raise RuntimeError(f"server said 500 to Authorization: Token {token} (cycle {cycles})")

def push(dry_run):
    if cycles == 1:
        raise ValueError("a different bug")
    return CycleReport(kind="push")

code = run_loop([PeriodicTask("pull", 0.01, pull), PeriodicTask("push", 0.01, push)], once=False, dry_run=False,
                stop_event=stop, jitter=lambda p: 0.0)
sentry_sdk.flush(timeout=5)
sys.exit(code)
"""


def test_sentry_gets_each_distinct_error_once_without_secrets(sentry_stub, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", AGENT, sentry_stub.dsn, TOKEN], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Three pull cycles crashed the same way, push once: the log shows all four crashes...
    assert result.stderr.count("cycle crashed") == 4
    assert TOKEN not in result.stderr  # ...and the log never shows the token
    # ...but Sentry received each distinct error once.
    events = sentry_stub.events()
    kinds = sorted(e["exception"]["values"][-1]["type"] for e in events)
    assert kinds == ["RuntimeError", "ValueError"], kinds
    for event in events:
        assert event["release"] == f"waldur-slurm-agent@{__version__}"
        assert event["environment"] == "ci-test"
    dsn_key = sentry_stub.dsn.split("//")[1].split("@")[0]
    for body in sentry_stub.bodies:
        assert TOKEN.encode() not in body
    for event in events:
        text = json.dumps(event)
        assert dsn_key not in text
        assert event["contexts"]["request"]["headers"]["Authorization"] == FILTERED
    runtime = next(e for e in events if e["exception"]["values"][-1]["type"] == "RuntimeError")
    assert "Authorization: Token [Filtered]" in runtime["exception"]["values"][-1]["value"]
    crumbs = [c.get("message", "") for c in runtime["breadcrumbs"]["values"]]
    assert any("calling Waldur with token [Filtered]" in c for c in crumbs), crumbs


def test_event_filter_identity_and_scrubbing():
    event_filter = EventFilter(Redactor([TOKEN]))

    def event(exc_type: str, value: str, line: int) -> dict:
        frame = {"module": "waldur_slurm.pull.reconciler", "function": "apply", "lineno": line}
        return {"exception": {"values": [{"type": exc_type, "value": value, "stacktrace": {"frames": [frame]}}]},
                "request": {"headers": [["Authorization", f"Token {TOKEN}"], ["Accept", "json"]]}}

    first = event_filter(event("SlurmError", f"failed for {TOKEN}", 10))
    assert first is not None
    assert first["request"]["headers"] == [["Authorization", FILTERED], ["Accept", "json"]]
    assert first["exception"]["values"][0]["value"] == f"failed for {FILTERED}"
    assert event_filter(event("SlurmError", "another message, same place", 10)) is None
    assert event_filter(event("SlurmError", "same type, other place", 11)) is not None
    log_event = {"logger": "waldur_slurm.pull.reconciler", "logentry": {"message": "order %s failed", "params": ["x"]}}
    assert event_filter(dict(log_event)) is not None
    assert event_filter({**log_event, "logentry": {"message": "order %s failed", "params": ["y"]}}) is None
    assert event_filter.dropped == 2


def test_redactor_knows_the_dsn_and_secret_shapes():
    dsn = "https://0123456789abcdef@sentry.example.com/7"
    redactor = Redactor([TOKEN, dsn, None, ""])
    text = redactor.text(f"dsn={dsn} key=0123456789abcdef Bearer abcdefghijklmnopqrstuvwxyz012345 Token has expired.")
    assert "0123456789abcdef" not in text and "abcdefghijklmnop" not in text
    assert "Token has expired." in text  # ordinary words are left alone
    assert redactor.data({"WALDUR_API_TOKEN": "x", "nested": [{"password": "p"}], "n": 3}) == {
        "WALDUR_API_TOKEN": FILTERED, "nested": [{"password": FILTERED}], "n": 3}


def test_json_logging_one_object_per_line_without_the_token():
    stream = io.StringIO()
    settings = SimpleNamespace(log_level="DEBUG", log_format="json", waldur_api_token=TOKEN, sentry_dsn=None)
    handler = setup_logging(settings, stream=stream)
    try:
        logging.getLogger("waldur_slurm.pull.reconciler").info("order %s done with %s", "abc", TOKEN)
        try:
            raise KeyError("boom")
        except KeyError:
            logging.getLogger("waldur_slurm.push.reporter").exception("push cycle crashed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "waldur_slurm.pull.reconciler"
    assert first["message"] == f"order abc done with {FILTERED}"
    assert second["level"] == "ERROR" and "KeyError: 'boom'" in second["exc_info"]
    assert TOKEN not in stream.getvalue()


def test_text_logging_level_from_settings():
    stream = io.StringIO()
    settings = SimpleNamespace(log_level="WARNING", log_format="text", waldur_api_token=TOKEN, sentry_dsn=None)
    handler = setup_logging(settings, stream=stream)
    try:
        logging.getLogger("waldur_slurm.pull.reconciler").info("hidden")
        logging.getLogger("waldur_slurm.pull.reconciler").warning("shown")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    assert stream.getvalue().count("\n") == 1
    assert " WARNING waldur_slurm.pull.reconciler: shown" in stream.getvalue()


def test_heartbeat_file_and_probe(tmp_path):
    path = tmp_path / "hb"
    assert heartbeat_age(path) is None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = [sys.executable, "-m", "waldur_slurm.tools.observability", "check-heartbeat", str(path), "--max-age", "60"]
    missing = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "does not exist" in missing.stdout
    touch_heartbeat(path, time.time() - 120)
    stale = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert stale.returncode == 1 and "unhealthy" in stale.stdout
    touch_heartbeat(path)
    fresh = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert fresh.returncode == 0, fresh.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hb"]  # no temporary file left behind
    # the 1.0 healthcheck's module path still answers the same way
    old = [sys.executable, "-m", "waldur_slurm.observability", *probe[3:]]
    fresh_old = subprocess.run(old, env=env, capture_output=True, text=True, timeout=30)
    assert fresh_old.returncode == 0 and fresh_old.stdout.startswith("healthy: last successful cycle"), fresh_old.stdout


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_endpoint_in_prometheus_text_format():
    metrics = Metrics(started=time.time())
    metrics.register("pull", 120)
    metrics.register("membership", 300)
    metrics.record("pull", 1.25, CycleReport(kind="pull", done=3, failed=1, deferred=2, slurm_processes=4,
                                             http_requests=7), now=1_700_000_000.5)
    metrics.record("pull", 0.5, None)
    metrics.record("pull", 0.75, CycleReport(kind="pull", done=1, slurm_processes=1, http_requests=2))
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        status, body = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200
        lines = set(body.splitlines())
        for expected in (
            f'waldur_slurm_build_info{{version="{__version__}"}} 1',
            'waldur_slurm_cycles_total{task="pull",outcome="ok"} 2',
            'waldur_slurm_cycles_total{task="pull",outcome="error"} 1',
            'waldur_slurm_cycles_total{task="membership",outcome="ok"} 0',
            'waldur_slurm_cycle_duration_seconds{task="pull"} 0.75',
            'waldur_slurm_items_processed_total{task="pull"} 4',
            'waldur_slurm_items_failed_total{task="pull"} 1',
            'waldur_slurm_items_deferred_total{task="pull"} 2',
            'waldur_slurm_slurm_processes_total{task="pull"} 5',
            'waldur_slurm_http_requests_total{task="pull"} 9',
            "# TYPE waldur_slurm_cycles_total counter",
        ):
            assert expected in lines, expected
        success = [line for line in lines if line.startswith('waldur_slurm_last_success_timestamp_seconds{task="pull"}')]
        assert len(success) == 1 and float(success[0].split()[-1]) > 1_700_000_000.5
        assert not any(line.startswith('waldur_slurm_last_success_timestamp_seconds{task="membership"}') for line in lines)
        assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok\n")
        assert get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
        metrics.started -= 10_000  # membership has not succeeded for longer than 3 periods
        status, reason = get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503 and reason.startswith("membership: no successful cycle")
    finally:
        server.close()


def test_text_logging_leaves_the_timestamp_to_journald(tmp_path):
    log_file = tmp_path / "journal"
    script = ("import logging; from waldur_slurm.tools.observability import setup_logging; "
              "setup_logging(level='INFO', fmt='text'); logging.getLogger('waldur_slurm.pull.reconciler').info('hello')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("JOURNAL_STREAM", None)
    with log_file.open("w") as stderr:
        info = os.fstat(stderr.fileno())
        subprocess.run([sys.executable, "-c", script], env=env, stderr=stderr, timeout=30, check=True)
        subprocess.run([sys.executable, "-c", script], env={**env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"},
                       stderr=stderr, timeout=30, check=True)
    plain, journal = log_file.read_text().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO waldur_slurm.pull.reconciler: hello$", plain), plain
    assert journal == "INFO waldur_slurm.pull.reconciler: hello"


DAEMON = r"""
import sys, time, types
from waldur_slurm.daemon.cycle import CycleReport
from waldur_slurm.daemon.loop import PeriodicTask, run_daemon
from waldur_slurm.tools.observability import setup_logging

setup_logging(level="INFO", fmt="json")
def cycle(dry_run):
    print("cycle", flush=True)
    return CycleReport(kind="push", done=2, failed=1, slurm_processes=1, http_requests=4)

settings = types.SimpleNamespace(heartbeat_file=None, metrics_port=int(sys.argv[1]), metrics_address="127.0.0.1")
sys.exit(run_daemon(settings, [PeriodicTask("push", 3600, cycle)], once=False, dry_run=False))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_daemon_serves_metrics_while_it_runs():
    import signal

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "cycle"
        body = ""
        for _ in range(100):  # the summary is recorded just after the cycle returns
            status, body = get(f"http://127.0.0.1:{port}/metrics")
            if 'waldur_slurm_cycles_total{task="push",outcome="ok"} 1' in body:
                break
            time.sleep(0.05)
        assert status == 200
        assert 'waldur_slurm_cycles_total{task="push",outcome="ok"} 1' in body
        assert 'waldur_slurm_items_failed_total{task="push"} 1' in body
        assert 'waldur_slurm_http_requests_total{task="push"} 4' in body
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert any(r["message"].startswith("metrics endpoint on http://127.0.0.1:") for r in records)
    assert any(r["message"].startswith("push cycle: seen=0 done=2 failed=1") for r in records)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)  # closed with the daemon

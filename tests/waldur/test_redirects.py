"""Issue 12 item 7/8: a Waldur answer that redirects is an error naming the Location, never an empty success;
a password in WALDUR_API_URL never shows, not even in --diag. Real sockets: a tiny HTTP server that redirects
every request the way an http->https proxy does."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from waldur_slurm.tools import diag
from waldur_slurm.config import load_settings
from waldur_slurm.waldur.client import WaldurClient
from waldur_slurm.waldur.errors import WaldurPermanentError

OFFERING = "0" * 31 + "1"


class _Redirect(BaseHTTPRequestHandler):
    hits: list[str] = []

    def _answer(self) -> None:
        self.hits.append(f"{self.command} {self.path}")
        self.send_response(301)
        self.send_header("Location", f"https://waldur.example.org{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[str]:
    _Redirect.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_an_error_naming_the_location(redirecting: str) -> None:
    client = WaldurClient(redirecting, "t" * 40, OFFERING, flavour="8", max_retries=0, sleep=lambda _s: None)
    try:
        with pytest.raises(WaldurPermanentError) as caught:
            client.list_orders()  # before the fix: an empty list, as if there were no orders
    finally:
        client.close()
    text = str(caught.value)
    assert "HTTP 301 redirect to https://waldur.example.org/api/marketplace-orders/" in text
    assert "WALDUR_API_URL" in text
    assert len(_Redirect.hits) == 1  # not followed, not retried


def test_diag_masks_the_url_password_and_names_the_redirect(redirecting: str, tmp_path: Path) -> None:
    tres = tmp_path / "tres.yaml"
    tres.write_text("cpu: {label: CPU, measured_unit: h, accounting_type: usage}\n")
    url = redirecting.replace("http://", "http://agent:s3cr3t-pw@") + "/api/"
    settings = load_settings({
        "WALDUR_API_URL": url, "WALDUR_API_TOKEN": "t" * 40, "WALDUR_OFFERING_UUID": OFFERING,
        "SLURM_TRES_CONFIG_PATH": str(tres), "SLURM_DEPLOYMENT_TYPE": "native",
    })
    shown = dict(settings.masked())["waldur_api_url"]
    assert "s3cr3t-pw" not in shown and shown.startswith("http://agent:***@127.0.0.1:")
    out = io.StringIO()
    code = diag.run(settings, out=out)
    text = out.getvalue()
    assert code == 1
    assert "s3cr3t-pw" not in text  # before the fix: printed in the settings table and the Waldur check
    assert "agent:***@127.0.0.1" in text
    assert "redirect to https://waldur.example.org/api/" in text

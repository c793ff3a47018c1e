"""Shared pytest fixtures for the Waldur side: a real stand-in server per test, and facades pointed at it.

Fixtures:
- ``standin``: ``StandIn`` in profile 8 (started on a free port, stopped after the test);
- ``standin_2024``: the same in profile 2024;
- ``standin_any``: parametrised over both profiles (test ids ``[8]`` and ``[2024]``);
- ``standin_offering``: a Marketplace.Slurm offering (cpu, mem, gres/gpu, usage-based) on ``standin``;
- ``waldur_client``: a ``WaldurClient`` for ``standin``'s offering (``client.offering_uuid``);
- ``waldur_client_any``: the same over ``standin_any``; the stand-in is ``client.standin``.

``make_client(standin, offering_uuid, **overrides)`` builds more facades (e.g. another token). Clients made
here never sleep between retries (``client.sleeps`` records the delays they would have slept).

Every fixture talks to a real HTTP server; nothing is mocked. Use ``standin.requests()`` / ``standin.count()``
to count what the code under test sent.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from waldur_standin.testing import StandIn

from waldur_slurm.waldur.client import WaldurClient


def make_client(standin: StandIn, offering_uuid: str, **overrides: Any) -> WaldurClient:
    sleeps: list[float] = []
    kwargs: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "sleep": sleeps.append}
    kwargs.update(overrides)
    token = kwargs.pop("token", standin.provider_token)
    client = WaldurClient(standin.url, token, offering_uuid, **kwargs)
    client.sleeps = sleeps  # type: ignore[attr-defined]
    client.standin = standin  # type: ignore[attr-defined]
    return client


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(profile="8") as server:
        yield server


@pytest.fixture
def standin_2024() -> Iterator[StandIn]:
    with StandIn(profile="2024") as server:
        yield server


@pytest.fixture(params=["8", "2024"])
def standin_any(request: pytest.FixtureRequest) -> Iterator[StandIn]:
    with StandIn(profile=request.param) as server:
        yield server


@pytest.fixture
def standin_offering(standin: StandIn) -> str:
    return standin.setup_offering()


@pytest.fixture
def waldur_client(standin: StandIn, standin_offering: str) -> Iterator[WaldurClient]:
    client = make_client(standin, standin_offering)
    yield client
    client.close()


@pytest.fixture
def waldur_client_any(standin_any: StandIn) -> Iterator[WaldurClient]:
    client = make_client(standin_any, standin_any.setup_offering())
    yield client
    client.close()

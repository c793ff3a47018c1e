"""The agent's Waldur facade against the REAL Mastermind (Oct 2024): answers the stand-in models from it."""

from __future__ import annotations

import pytest

from tests.mastermind.conftest import Site
from tests.mastermind.test_lifecycle import create
from waldur_slurm.waldur.client import WaldurClient
from waldur_slurm.waldur.errors import WaldurAuthError

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


def test_deleting_an_association_that_is_gone_is_done_and_the_version_is_staff_only(site: Site) -> None:
    w = site.world
    alice = w.member("alice")
    w.set_username(alice, "wsa_alice")
    _order, res = create(site, "gone")
    client = WaldurClient(w.mm.url + "/api/", w.agent_token, w.offering_uuid)
    try:
        assert w.associations(res["uuid"]) == {"wsa_alice"}
        assert client.delete_association(res["uuid"], "wsa_alice") is True
        # the server answers 400 ["Association between the allocation and the username does not exist."]
        assert client.delete_association(res["uuid"], "wsa_alice") is False
        assert w.associations(res["uuid"]) == set()
        assert client.create_association(res["uuid"], "wsa_alice") is True
        assert w.associations(res["uuid"]) == {"wsa_alice"}
        with pytest.raises(WaldurAuthError) as refused:
            client.server_version()
        assert refused.value.status == 403
    finally:
        client.close()

"""The fixtures work and the facade drives a Create order end to end in both profiles."""

from waldur_slurm.waldur.client import WaldurClient


def test_create_order_end_to_end(waldur_client_any: WaldurClient) -> None:
    client = waldur_client_any
    w = client.standin  # type: ignore[attr-defined]
    project = w.add_project(w.add_customer("Org"), "P1")
    placed = w.place_order(client.offering_uuid, project, limits={"cpu": 10})
    order = client.approve_order(placed["uuid"])
    assert order.state == "executing"
    client.set_backend_id(order.resource_uuid, "hpc_alloc")
    client.complete_order(order)
    assert client.get_order(order.uuid).state == "done"
    res = client.get_resource(placed["resource_uuid"])
    assert (res.state, res.backend_id, res.limits) == ("OK", "hpc_alloc", {"cpu": 10})

"""Waldur calls the agent never makes but the tests use to set up and check the stand-in's endpoints
(offering users' logins and states, backend metadata, one allocation's associations). They were facade methods
with no caller in the agent; they live here so the facade holds only what the agent does."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any
from uuid import UUID

# the facade first: it makes the SDK's models package lazy before any SDK import
from waldur_slurm.waldur.client import FLAVOUR_8, FLAVOUR_2024, WaldurClient, _association_pages  # isort: skip
from waldur_slurm.waldur.models import OfferingUser  # isort: skip
from waldur_api_client.api.marketplace_offering_users import (  # isort: skip
    marketplace_offering_users_create,
    marketplace_offering_users_partial_update,
)
from waldur_api_client.api.marketplace_provider_resources import marketplace_provider_resources_set_backend_metadata  # isort: skip
from waldur_api_client.models import (  # isort: skip
    OfferingUserRequest,
    OfferingUserStateTransitionRequest,
    PatchedOfferingUserRequest,
    ResourceBackendMetadataRequest,
    ResourceBackendMetadataRequestBackendMetadata,
)


def set_backend_metadata(client: WaldurClient, resource_uuid: str, metadata: Mapping[str, Any]) -> None:
    body = ResourceBackendMetadataRequest(
        backend_metadata=ResourceBackendMetadataRequestBackendMetadata.from_dict(dict(metadata))
    )
    client._send(marketplace_provider_resources_set_backend_metadata, uuid=resource_uuid, body=body, idempotent=True)


def set_offering_user_username(client: WaldurClient, offering_user_uuid: str, username: str) -> OfferingUser:
    """PATCH the cluster login; on 8.x this also moves a Creating/Error creating user to OK."""
    resp = client._send(
        marketplace_offering_users_partial_update,
        uuid=offering_user_uuid,
        body=PatchedOfferingUserRequest(username=username),
        idempotent=True,
    )
    return OfferingUser.from_json(client._object(resp))


def create_offering_user(client: WaldurClient, user_uuid: str, username: str) -> OfferingUser:
    """For users Waldur did not create itself; 400 if the (offering, user) pair already exists."""
    body = OfferingUserRequest(offering_uuid=UUID(client.offering_uuid), user_uuid=UUID(user_uuid), username=username)
    resp = client._send(marketplace_offering_users_create, body=body)
    return OfferingUser.from_json(client._object(resp))


def offering_user_action(client: WaldurClient, offering_user_uuid: str, action: str, comment: str = "") -> bool:
    """8.x state actions (begin_creating, set_ok, set_error_creating, ...); False (nothing sent) on 2024."""
    if client.flavour != FLAVOUR_8:
        return False
    module = importlib.import_module(f"waldur_api_client.api.marketplace_offering_users.marketplace_offering_users_{action}")
    kwargs: dict[str, Any] = {"uuid": offering_user_uuid}
    if "body" in inspect.signature(module._get_kwargs).parameters:
        kwargs["body"] = OfferingUserStateTransitionRequest(comment=comment) if comment else OfferingUserStateTransitionRequest()
    client._send(module, **kwargs)
    return True


def list_associations(client: WaldurClient, resource_uuid: str, allocation_uuid: str | None = None) -> list[str]:
    """Usernames associated with the resource's allocation (2024); [] on 8.x without a request."""
    if client.flavour != FLAVOUR_2024:
        return []
    alloc = allocation_uuid or client.get_resource(resource_uuid).allocation_uuid
    if alloc is None:
        return []
    return [str(d.get("username", "")) for d in _association_pages(client, {"allocation_uuid": alloc})]


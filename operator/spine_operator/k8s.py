"""The operator's adapter over the Kubernetes API: server-side apply, get, create, patch.

One generic path per call instead of a typed client method per kind, so builders stay plain
dicts. The blocking kubernetes client runs in a thread, keeping kopf handlers async. Every call
has a timeout; errors become `ApiError` with the server's status and message.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from spine_operator.api.kinds import API_VERSION, KINDS
from spine_operator.labels import FIELD_MANAGER

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class ResourceType:
    plural: str
    verbs: frozenset[str]  # every verb the operator uses on it: the source of its RBAC rules
    namespaced: bool = True


APPLIED = frozenset({"get", "create", "patch"})  # server-side apply creates a missing object
# Every kind the operator reads or writes, and how. A call the table does not allow is a
# programming error (ValueError), so manifests/base/rbac.yaml, derived from this table by a
# test, always grants what the code uses and nothing more.
RESOURCE_TYPES: dict[tuple[str, str], ResourceType] = {
    ("v1", "ConfigMap"): ResourceType("configmaps", APPLIED),
    ("v1", "Secret"): ResourceType("secrets", frozenset({"get", "create"})),
    # Listed: a ServiceRegistration's spec URL may point at any Service of its namespace.
    ("v1", "Service"): ResourceType("services", APPLIED | {"list"}),
    ("v1", "PersistentVolumeClaim"): ResourceType(
        "persistentvolumeclaims", frozenset({"get", "patch"})
    ),
    ("apps/v1", "StatefulSet"): ResourceType("statefulsets", APPLIED),
    # delete: the flow engine's Deployment of an operator before replicas became a StatefulSet.
    ("apps/v1", "Deployment"): ResourceType("deployments", APPLIED | {"delete"}),
    ("networking.k8s.io/v1", "NetworkPolicy"): ResourceType("networkpolicies", APPLIED),
    ("storage.k8s.io/v1", "StorageClass"): ResourceType(
        "storageclasses", frozenset({"get"}), namespaced=False
    ),
}
RESOURCE_TYPES.update(
    {
        (API_VERSION, info.kind): ResourceType(info.plural, frozenset({"get", "list"}))
        for info in KINDS
    }
)
STATUS_VERBS = frozenset({"patch"})  # on <plural>/status of every kind of ours


def _allowed(api_version: str, kind: str, verb: str, subresource: str | None = None) -> None:
    resource = RESOURCE_TYPES.get((api_version, kind))
    allowed = STATUS_VERBS if subresource == "status" else (resource.verbs if resource else ())
    if verb not in allowed:
        raise ValueError(
            f"the operator does not {verb} {api_version}/{kind}"
            f"{'/' + subresource if subresource else ''}: add it to RESOURCE_TYPES (and RBAC)"
        )


class ApiError(Exception):
    """The API server refused a request; `status` is its HTTP status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Conflicts, throttling and server errors heal by themselves; 4xx otherwise do not."""
        return self.status in (409, 429) or self.status >= 500


def resource_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    try:
        resource = RESOURCE_TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not know the kind {api_version}/{kind}") from None
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix
    if resource.namespaced:
        if not namespace:
            raise ValueError(f"{kind} {name} needs a namespace")
        path += f"/namespaces/{namespace}"
    path += f"/{resource.plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller reference to `owner`, so garbage collection removes the child with it."""
    metadata = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_owner(obj: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, Any]:
    if owner is None:
        return obj
    metadata = {**obj["metadata"], "ownerReferences": [owner_reference(owner)]}
    return {**obj, "metadata": metadata}


_config_lock = threading.Lock()
_api_client: ApiClient | None = None


def default_api_client() -> ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    global _api_client
    with _config_lock:
        if _api_client is None:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            _api_client = ApiClient(configuration)
        return _api_client


def reset_api_client() -> None:
    """Forget the cached client (tests point the operator at a new emulator)."""
    global _api_client
    with _config_lock:
        _api_client = None


class Kubernetes:
    """Async calls to the API server with the operator's field manager."""

    def __init__(self, api_client: ApiClient | None = None, checked: bool = False) -> None:
        """`checked`: refuse any call RESOURCE_TYPES does not declare (the operator's own
        adapter is checked; tests that seed objects through this class are not)."""
        self._api_client = api_client
        self.checked = checked

    def _allowed(
        self, api_version: str, kind: str, verb: str, subresource: str | None = None
    ) -> None:
        if self.checked:
            _allowed(api_version, kind, verb, subresource)

    @property
    def api_client(self) -> ApiClient:
        return self._api_client or default_api_client()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        client = self.api_client
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
        except ApiException as error:
            raise _api_error(error) from None
        except urllib3.exceptions.HTTPError as error:
            # Refused, reset or timed out: the API server is away (restarting, upgrading).
            # A retryable ApiError, so handlers retry soon with one clear line, not a traceback.
            message = f"the API server cannot be reached: {error}"
            raise ApiError(503, "Unavailable", message) from None
        if response.status >= 400:
            raise _api_error_from(response.status, response.reason, data)
        return json.loads(data) if data else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._call, method, path, **kwargs)

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        self._allowed(api_version, kind, "get")
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete the object (its dependents go in the background); False if it was gone."""
        self._allowed(api_version, kind, "delete")
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def list(
        self, api_version: str, kind: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        """Every object of a kind in a namespace."""
        self._allowed(api_version, kind, "list")
        listing = await self.request("GET", resource_path(api_version, kind, namespace))
        return list(listing.get("items") or [])

    async def apply(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> dict:
        """Server-side apply under the field manager `spine-operator`, taking over conflicts."""
        obj = with_owner(obj, owner)
        metadata = obj["metadata"]
        for verb in ("create", "patch"):
            self._allowed(obj["apiVersion"], obj["kind"], verb)
        path = resource_path(
            obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"]
        )
        return await self.request(
            "PATCH",
            path,
            body=obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def create(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> dict:
        obj = with_owner(obj, owner)
        metadata = obj["metadata"]
        self._allowed(obj["apiVersion"], obj["kind"], "create")
        path = resource_path(obj["apiVersion"], obj["kind"], metadata.get("namespace"))
        return await self.request("POST", path, body=obj, query=[("fieldManager", FIELD_MANAGER)])

    async def get_or_create(self, obj: dict[str, Any], owner: dict[str, Any] | None = None) -> dict:
        """The existing object, or `obj` created now: for generated Secrets, made once and never
        rewritten (a concurrent creator wins and its object is returned)."""
        metadata = obj["metadata"]
        found = await self.get(
            obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"]
        )
        if found is not None:
            return found
        try:
            return await self.create(obj, owner=owner)
        except ApiError as error:
            if error.status != 409:
                raise
        found = await self.get(
            obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"]
        )
        if found is None:
            raise ApiError(409, "Conflict", f"{metadata['name']} was created and deleted at once")
        return found

    async def patch_merge(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self._allowed(api_version, kind, "patch", subresource)
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        current: dict[str, Any] | None,
        new_status: dict[str, Any],
    ) -> None:
        """Write the fields of `new_status` unless `current` already holds them; a resource
        deleted meanwhile has nothing left to report (every status writer shares this)."""
        current = current or {}
        if all(current.get(key) == value for key, value in new_status.items()):
            return
        try:
            await self.patch_merge(
                API_VERSION, kind, namespace, name, {"status": new_status}, subresource="status"
            )
        except ApiError as error:
            if error.status != 404:
                raise


def _api_error(error: ApiException) -> ApiError:
    return _api_error_from(error.status or 0, error.reason or "", error.body)


def _api_error_from(status: int, reason: str | None, data: Any) -> ApiError:
    message = ""
    if data:
        try:
            message = json.loads(data).get("message", "")
        except (ValueError, AttributeError):
            message = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    return ApiError(status, reason or "", message[:500])

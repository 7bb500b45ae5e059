"""kmock's KubernetesEmulator with the API-server behaviour kopf and our adapter rely on.

Plain kmock 0.8 stores bodies as sent. This layer adds what a real API server owns: uid,
namespace, creationTimestamp, a global resourceVersion bumped on every write, generation bumped
on spec changes, the status subresource split, 201 on create, 409 on a stale resourceVersion,
422 on a failed JSON-patch test, PUT, server-side apply of a missing object creating it (apply
is stored as a merge: field ownership and pruning are proven by builder unit tests instead), no
event for a no-op patch, and deletion with finalizers. Recipe: shared/TESTING.md section 1.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import jsonschema
import kmock
import yaml

SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "namespace",
    "name",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
)


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def essence(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in ("metadata", "status")}


def status_refusal(kind: Any, status: Any) -> str | None:
    """Why the API server would not keep a status of one of our kinds as written, or None.

    A real API server prunes fields its schema does not know, silently; here they are refused
    (422, naming the field), so a status field the CRD lacks fails the test that writes it."""
    from spine_operator.api.kinds import kind_by_name
    from tests.support.crd_schema import crd_schema, to_jsonschema

    if not isinstance(kind, str) or kind_by_name(kind) is None or status is None:
        return None
    schema = crd_schema(kind)["properties"]["status"]
    try:
        jsonschema.validate(copy.deepcopy(status), to_jsonschema(schema))
    except jsonschema.ValidationError as error:
        where = "status." + ".".join(str(part) for part in error.absolute_path)
        return f"{kind} {where}: {error.message}"
    return None


class RealisticEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self._last_version = 0
        self._write_lock = asyncio.Lock()

    def _next_version(self) -> str:
        self._last_version = next(self._versions)
        return str(self._last_version)

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        resource = request.resource
        info = self.resources[resource] if resource in self.resources else None  # noqa: SIM401
        result.update(
            apiVersion=f"{resource.group}/{resource.version}"
            if resource.group
            else resource.version,
            kind=f"{info.kind}List" if info and info.kind else "List",
        )
        result["metadata"]["resourceVersion"] = str(self._last_version)
        return result

    async def _handle(self, request: Any) -> Any:
        writes = request.resource is not None and (
            request.action == kmock.action.CREATE
            or (request.name and request.method in ("PUT", "PATCH", "DELETE"))
        )
        if not writes:
            return await super()._handle(request)
        async with self._write_lock:
            return await self._write(request)

    async def _delegate(self, request: Any, action: Any, data: Any) -> Any:
        # kmock matches reactions by request identity: rewrite in place, restore afterwards.
        saved = request.action, request.data
        object.__setattr__(request, "action", action)
        object.__setattr__(request, "data", data)
        try:
            return await super()._handle(request)
        finally:
            object.__setattr__(request, "action", saved[0])
            object.__setattr__(request, "data", saved[1])

    async def _write(self, request: Any) -> Any:
        key = (request.resource, request.namespace, request.name)
        stored = (
            self._objects[key] if key in self._objects and not self._objects[key].deleted else None
        )
        current = stored.raw if stored is not None else None
        has_status = (
            request.resource in self.resources
            and "status" in self.resources[request.resource].subresources
        )
        is_apply = request.headers.get("Content-Type", "").startswith("application/apply-patch")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        data = yaml.safe_load(request.text) if is_apply and request.data is None else request.data

        if request.action == kmock.action.CREATE or (is_apply and current is None):
            if not isinstance(data, dict):
                raise kmock.KubernetesError(
                    status=400, reason="BadRequest", message="body must be an object"
                )
            if request.action == kmock.action.CREATE and current is not None:
                raise kmock.KubernetesError(
                    status=409,
                    reason="AlreadyExists",
                    message=f"{request.name or 'object'} already exists",
                )
            data = copy.deepcopy(data)
            metadata = data.setdefault("metadata", {})
            if request.namespace:
                metadata["namespace"] = request.namespace
            metadata.update(
                uid=str(uuid.uuid4()),
                creationTimestamp=now,
                generation=1,
                resourceVersion=self._next_version(),
            )
            if has_status:
                data.pop("status", None)
            response = await self._delegate(request, kmock.action.CREATE, data)
            if isinstance(response, aiohttp.web.Response) and response.status == 200:
                response.set_status(201)
            return response
        if current is None:
            return await super()._handle(request)  # kmock's 404
        current_metadata = current.get("metadata", {})
        if request.method == "DELETE":
            if current_metadata.get("finalizers") and not current_metadata.get("deletionTimestamp"):
                assert stored is not None
                stored.patch(
                    {
                        "metadata": {
                            "deletionTimestamp": now,
                            "resourceVersion": self._next_version(),
                            "generation": int(current_metadata.get("generation") or 0) + 1,
                        }
                    }
                )
                async with self._lock:
                    await self._buses[request.resource].put(
                        {"type": "MODIFIED", "object": stored.raw}
                    )
            return await super()._handle(request)

        wanted_version = None
        if isinstance(data, list):  # JSON patch; its test ops do the concurrency check
            try:
                body = jsonpatch.apply_patch(copy.deepcopy(current), data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", message=str(error)
                ) from None
        elif isinstance(data, dict):  # PUT, merge, strategic (as merge), apply (as merge)
            wanted_version = (data.get("metadata") or {}).get("resourceVersion")
            body = copy.deepcopy(data) if request.method == "PUT" else merge_patch(current, data)
        else:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="unsupported body")
        if wanted_version is not None and str(wanted_version) != str(
            current_metadata.get("resourceVersion")
        ):
            raise kmock.KubernetesError(
                status=409, reason="Conflict", message="the object has been modified"
            )
        if has_status and request.subresource == "status":
            body = {
                **{k: v for k, v in current.items() if k != "status"},
                **({"status": body["status"]} if body.get("status") is not None else {}),
            }
            refusal = status_refusal(current.get("kind"), body.get("status"))
            if refusal:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=refusal)
        elif has_status:
            body = {
                **{k: v for k, v in body.items() if k != "status"},
                **({"status": current["status"]} if "status" in current else {}),
            }
        metadata = dict(body.get("metadata") or {})
        for field in SERVER_OWNED:
            metadata.pop(field, None)
            if field in current_metadata:
                metadata[field] = current_metadata[field]
        body["metadata"] = metadata
        if body == current:  # no-op: no new version, no watch event
            return aiohttp.web.json_response(current)
        if essence(body) != essence(current):
            metadata["generation"] = int(current_metadata.get("generation") or 0) + 1
        metadata["resourceVersion"] = self._next_version()
        return await self._delegate(
            request, kmock.action.UPDATE, [{"op": "replace", "path": "", "value": body}]
        )

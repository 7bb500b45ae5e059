"""A Flow's `serviceRef` (in a `call` step or an `http` sink) resolved to the URL the engine calls.

`plan_flows` (desired/flow.py) calls `resolve_service_ref` for each reference with the
namespace's ServiceRegistrations: the named registration's HTTP API gives the base URL (its
Service's complete DNS name and port inside the namespace, or its `url`), the reference's `path`
is appended. The engine calls that backend directly: it holds no OIDC token, so the proxy's
fail-closed routes would refuse it, and the twin is reached the same way. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator.api.serviceregistration import RegistrationApi, ServiceRegistrationSpec
from spine_operator.environment import Environment
from spine_runtime.config.flow import ServiceRef

# A registration whose status reports one of these (for its current generation) was refused by
# the operator: a flow does not call it until it is fixed. Ready=False while the proxy starts
# (Progressing) or because the proxy has no room (ProxyConfigFull) does not hold a flow back:
# the engine does not go through the proxy.
REFUSED_REASONS = frozenset(
    {
        cond.INVALID_SPEC,
        cond.INVALID_REFERENCE,
        cond.DEPENDENCY_NOT_FOUND,
        cond.DEPENDENCY_NOT_READY,
        cond.SPINE_NOT_FOUND,
    }
)


@dataclass(frozen=True)
class Unresolved:
    """Why a reference does not resolve: a condition reason and a message naming the fix."""

    reason: str
    message: str


def registration_refusal(body: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) if the registration's status says the operator refused its current
    generation; None if it was accepted or not judged yet (a flow then trusts its spec)."""
    generation = body["metadata"].get("generation")
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") != cond.READY or condition.get("status") != "False":
            continue
        observed = condition.get("observedGeneration")
        if condition.get("reason") in REFUSED_REASONS and (
            observed is None or generation is None or observed == generation
        ):
            return condition["reason"], condition.get("message") or ""
    return None


def _http_api(
    name: str, registration: ServiceRegistrationSpec, ref: ServiceRef, where: str
) -> RegistrationApi | Unresolved:
    http = [api for api in registration.apis if api.protocol == "HTTP"]
    if ref.api is not None:
        found = next((api for api in registration.apis if api.id == ref.api), None)
        if found is None:
            ids = ", ".join(api.id for api in http) or "none"
            return Unresolved(
                cond.INVALID_REFERENCE,
                f"{where}.serviceRef: ServiceRegistration {name} has no API {ref.api} (its "
                f"HTTP APIs: {ids}): name one of them in serviceRef.api",
            )
        if found.protocol != "HTTP":
            return Unresolved(
                cond.INVALID_REFERENCE,
                f"{where}.serviceRef: API {ref.api} of ServiceRegistration {name} is an "
                f"{found.protocol} API; a flow calls HTTP APIs",
            )
        return found
    if len(http) == 1:
        return http[0]
    if not http:
        return Unresolved(
            cond.INVALID_REFERENCE,
            f"{where}.serviceRef: ServiceRegistration {name} has no HTTP API to call",
        )
    return Unresolved(
        cond.INVALID_REFERENCE,
        f"{where}.serviceRef: ServiceRegistration {name} has several HTTP APIs "
        f"({', '.join(api.id for api in http)}): say which in serviceRef.api",
    )


def api_base_url(api: RegistrationApi, env: Environment, namespace: str) -> str:
    """Where the API is served inside the namespace: its Service by complete DNS name (locally
    127.0.0.1 at the Service's port, as the proxy reaches it), or its registered url."""
    if api.service_ref is not None:
        host = env.service_host(namespace, api.service_ref.name)
        return f"http://{host}:{api.service_ref.port}"
    assert api.url is not None, "the model requires serviceRef or url for HTTP"
    return api.url.rstrip("/")


def resolve_service_ref(
    ref: ServiceRef,
    where: str,
    registrations: dict[str, dict[str, Any]],
    env: Environment,
    namespace: str,
) -> str | Unresolved:
    """The URL a `serviceRef` leads to, or why it does not resolve (yet).

    `registrations` maps each ServiceRegistration of the namespace by name to its body."""
    body = registrations.get(ref.name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return Unresolved(
            cond.DEPENDENCY_NOT_FOUND,
            f"{where}.serviceRef: ServiceRegistration {ref.name} does not exist in namespace "
            f"{namespace}: apply it, and the flow starts as soon as it is accepted",
        )
    try:
        registration = ServiceRegistrationSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return Unresolved(
            cond.DEPENDENCY_NOT_READY,
            f"{where}.serviceRef: ServiceRegistration {ref.name} has an invalid spec (its "
            "status says what to fix); the flow starts once it is accepted",
        )
    refusal = registration_refusal(body)
    if refusal is not None:
        return Unresolved(
            cond.DEPENDENCY_NOT_READY,
            f"{where}.serviceRef: ServiceRegistration {ref.name} is refused ({refusal[0]}: "
            f"{refusal[1].rstrip('.')}); the flow starts once it is accepted",
        )
    api = _http_api(ref.name, registration, ref, where)
    if isinstance(api, Unresolved):
        return api
    return api_base_url(api, env, namespace) + ref.path

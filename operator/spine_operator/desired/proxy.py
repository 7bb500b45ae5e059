"""The namespace's proxy (HAProxy under our supervisor) and catalog, planned from every
ServiceRegistration and the Spine's `auth` and `proxy` settings (an aggregate, like the flows).

`plan_proxy` checks each registration (its spec model, its Services, each API's spec document,
its route paths against older registrations' and the reserved /twin, /catalog and /flows),
gives each MQTT API a broker login allowed exactly its channels, and renders haproxy.cfg (routes
for the accepted HTTP APIs, the twin API, the catalog and the Flows' exposed http sources), the
supervisor's and the catalog's config documents, their workloads and NetworkPolicies. A
namespace with neither a registration nor `auth` gets nothing. Pure: the handler, `spine render`
and `spine up` call it alike.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels, specs
from spine_operator.api.serviceregistration import RegistrationApi, ServiceRegistrationSpec
from spine_operator.api.spine import SpineSpec
from spine_operator.desired import workload
from spine_operator.desired.common import resources
from spine_operator.desired.flow_routes import FLOWS_PATH, flow_catalog_entries, flow_routes
from spine_operator.desired.haproxy import (
    Method,
    ProxyAuth,
    ProxyBackend,
    ProxyInputs,
    ProxyRoute,
    RateLimit,
    VerifyKey,
    render_haproxy_config,
)
from spine_operator.desired.logins import Login, build_login_secret
from spine_operator.desired.plan import ConfigPush, Plan, Refusal, SecretInput
from spine_operator.desired.twin import RUNTIME_UID
from spine_operator.environment import Environment
from spine_operator.errors import DependencyNotReady, InvalidSpec, ReconcileError
from spine_operator.yamlfiles import YamlError, load_document
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.catalog import CatalogConfig, ServiceEntry
from spine_runtime.config.proxy import ProxyConfig

PROXY_COMPONENT = "proxy"
CATALOG_COMPONENT = "catalog"
TWIN_PATH = "/twin"
CATALOG_PATH = "/catalog"
# The proxy sends the twin's internal write token from this variable (fed by the twin's token
# Secret): it never appears in haproxy.cfg, a ConfigMap or a config push.
TWIN_TOKEN_ENV = "SPINE_TWIN_WRITE_TOKEN"
READ_METHODS: list[Method] = ["GET", "HEAD"]
WRITE_METHODS: list[Method] = ["POST", "PUT", "PATCH", "DELETE"]
CATALOG_USERNAME = "spine-catalog"
ANNOUNCE_PREFIX = "sc/v3/announcement"
TWIN_ENTRY_ID = "spine-twin"
# A spec document is embedded in the catalog's config up to this size; larger ones are
# listed by URL only, so the catalog's ConfigMap stays far below Kubernetes' 1 MiB.
MAX_EMBEDDED_SPEC_BYTES = 64 * 1024
MAX_EMBEDDED_TOTAL_BYTES = 384 * 1024  # all specs of one catalog together; later ones by URL
# A ConfigMap holds at most 1 MiB; each config document stays below this, with room to spare.
MAX_CONFIG_DOCUMENT_BYTES = 900 * 1024
MAX_PROXY_ROUTES = 500  # ProxyInputs.routes' bound
PROXY_LIVE_FIELDS = frozenset({"haproxyCfg", "keyFiles", "keys", "routes"})
CATALOG_LIVE_FIELDS = frozenset({"entries", "description", "writeRole"})

# What gather found for one API's spec document: its bytes, why it could not be read, or None
# where it is not read at all (`spine render` does not fetch URLs).
SpecSource = bytes | ReconcileError | None


def registration_username(registration: str, api: str) -> str:
    """`service-<registration>.<api>`: an API id has no '.', so no two (registration, api)
    pairs share a login, and the prefix keeps it apart from flow- and gateway- logins."""
    return f"service-{registration}.{api}"


def catalog_login() -> Login:
    return Login(
        CATALOG_USERNAME,
        client_id=CATALOG_USERNAME,
        publish=(f"{ANNOUNCE_PREFIX}/#",),
        # At start it reads the retained alives it left before a restart, to clear stale ones.
        subscribe=(f"{ANNOUNCE_PREFIX}/+/+/alive",),
        description="Spine catalog announcements",
    )


def registration_logins(name: str, registration: ServiceRegistrationSpec) -> list[Login]:
    """A broker login per MQTT API, allowed exactly its `access` filters, in its own Secret
    `<registration>-<api>-mqtt`, bound to its own client id."""
    return [
        Login(
            registration_username(name, api.id),
            publish=tuple(api.access.publish),
            subscribe=tuple(api.access.subscribe),
            description=f"Spine ServiceRegistration {name}, API {api.id}",
            client_id=registration_username(name, api.id),
            secret_name=labels.registration_login_secret_name(name, api.id),
        )
        for api in registration.apis
        if api.access is not None
    ]


@dataclass(frozen=True)
class KeysInput:
    """The issuer's verification keys as the operator's key cache last found them."""

    keys: tuple[VerifyKey, ...] = ()
    fetched_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ProxyPlanInputs:
    """What the plan of a namespace's proxy and catalog reads."""

    spine: dict[str, Any]
    registrations: list[dict[str, Any]]
    env: Environment
    specs: dict[tuple[str, str], SpecSource]  # (registration, api id) -> its document
    services: dict[str, dict[str, Any]] | None  # the namespace's Services; None: not checked
    keys: KeysInput
    proxy_token: SecretInput
    catalog_token: SecretInput
    twin_tokens: SecretInput
    catalog_login: SecretInput
    logins: dict[str, SecretInput] = field(default_factory=dict)  # MQTT API login Secrets
    tls: SecretInput | None = None
    existing_proxy: dict[str, Any] | None = None
    existing_proxy_ready: bool = False
    existing_catalog: dict[str, Any] | None = None
    existing_catalog_ready: bool = False
    flows: list[dict[str, Any]] = field(default_factory=list)  # their exposed http sources


@dataclass(frozen=True)
class ApiVerdict:
    id: str
    protocol: str
    route_url: str | None = None
    login_secret: str | None = None
    spec_hash: str | None = None
    spec_valid: bool | None = None


@dataclass(frozen=True)
class RegistrationVerdict:
    """One registration's place: routed (Reconciled) or refused, and what its specs said."""

    reason: str
    message: str
    spec_valid: bool | None = None  # None: not known (a spec not read yet)
    spec_reason: str = cond.AWAITING_STATUS
    spec_message: str = ""
    apis: tuple[ApiVerdict, ...] = ()
    routes: tuple[str, ...] = ()  # route names, for the proxy's /status


@dataclass
class Selection:
    """The accepted registrations' routes, logins and catalog entries, and every verdict."""

    routes: list[ProxyRoute] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # route name -> owner
    logins: list[Login] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, RegistrationVerdict] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)  # oldest first

    def refuse(self, name: str, verdict: RegistrationVerdict) -> None:
        """Take an accepted registration out again (its routes, logins and entry)."""
        owner = f"ServiceRegistration/{name}"
        self.routes = [route for route in self.routes if self.owners.get(route.name) != owner]
        self.owners = {route: who for route, who in self.owners.items() if who != owner}
        self.logins = [
            login for login in self.logins if not login.username.startswith(f"service-{name}.")
        ]
        self.entries = [entry for entry in self.entries if entry["id"] != name]
        self.accepted.remove(name)
        self.verdicts[name] = verdict


def _overlaps(one: str, other: str) -> bool:
    """Whether two path prefixes claim the same requests: equal, or one is a whole-segment
    prefix of the other (a route under /twin would take the twin API's requests)."""
    if one == other or "/" in (one, other):
        return True
    return one.startswith(other + "/") or other.startswith(one + "/")


def _target_backend(api: RegistrationApi, env: Environment, namespace: str) -> ProxyBackend:
    if api.service_ref is not None:
        return ProxyBackend(
            host=env.service_host(namespace, api.service_ref.name), port=api.service_ref.port
        )
    assert api.url is not None, "the model requires serviceRef or url for HTTP"
    parts = urlsplit(api.url)
    tls = parts.scheme == "https"
    return ProxyBackend(
        host=parts.hostname or "",
        port=parts.port or (443 if tls else 80),
        tls=tls,
        path_prefix=parts.path.rstrip("/"),
    )


def _target_url(api: RegistrationApi, env: Environment, namespace: str) -> str:
    if api.service_ref is not None:
        host = env.service_host(namespace, api.service_ref.name)
        return f"http://{host}:{api.service_ref.port}"
    return api.url or ""


def _embedded(raw: bytes) -> dict[str, Any] | None:
    """The spec for the catalog entry, read as strictly as the validator read it (aliases
    bounded: the catalog's config is JSON, where every alias would be written out)."""
    if len(raw) > MAX_EMBEDDED_SPEC_BYTES:
        return None
    try:
        document = load_document(raw)
    except YamlError:
        return None
    return document if isinstance(document, dict) else None


def _refused(reason: str, message: str, **kwargs: Any) -> RegistrationVerdict:
    """Messages that start with a field path keep its spelling (spec.apis[0]...)."""
    return RegistrationVerdict(reason, message, **kwargs)


def select_registrations(inputs: ProxyPlanInputs, namespace: str, public_url: str) -> Selection:
    """Each registration, oldest first: checked, then its routes, logins and catalog entry."""
    selection = Selection()
    claimed: dict[str, str] = {
        TWIN_PATH: "the twin API",
        CATALOG_PATH: "the catalog",
        FLOWS_PATH: "the Flows' http sources",
    }
    secrets_claimed: set[str] = set()
    ordered = sorted(
        inputs.registrations,
        key=lambda item: (
            item["metadata"].get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    for item in ordered:
        name = item["metadata"]["name"]
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            registration = ServiceRegistrationSpec.model_validate(item.get("spec") or {})
        except ValidationError as error:
            selection.verdicts[name] = _refused(
                cond.INVALID_SPEC, f"Invalid spec: {describe_validation_error(error, 'spec')}"
            )
            continue
        verdict = _check_registration(
            inputs, name, registration, namespace, public_url, claimed, secrets_claimed
        )
        if isinstance(verdict, RegistrationVerdict):
            selection.verdicts[name] = verdict
            continue
        routes, logins, entry, apis, spec_note = verdict
        for route in routes:
            claimed[route.path] = f"ServiceRegistration {name}"
            selection.owners[route.name] = f"ServiceRegistration/{name}"
        secrets_claimed.update(login.secret for login in logins)
        selection.routes += routes
        selection.logins += logins
        selection.entries.append(entry)
        selection.accepted.append(name)
        parts = [f"{len(routes)} routes on the proxy"] if routes else []
        if logins:
            parts.append(f"{len(logins)} broker logins")
        selection.verdicts[name] = RegistrationVerdict(
            cond.RECONCILED,
            ("Registered in the catalog with " + " and ".join(parts))
            if parts
            else "Registered in the catalog",
            spec_valid=True if spec_note is None else None,
            spec_reason=cond.SPEC_VALIDATED if spec_note is None else cond.AWAITING_STATUS,
            spec_message=spec_note or "Every API's spec is valid",
            apis=tuple(apis),
            routes=tuple(route.name for route in routes),
        )
    return selection


def _check_registration(
    inputs: ProxyPlanInputs,
    name: str,
    registration: ServiceRegistrationSpec,
    namespace: str,
    public_url: str,
    claimed: dict[str, str],
    secrets_claimed: set[str],
) -> RegistrationVerdict | tuple[list[ProxyRoute], list[Login], dict, list[ApiVerdict], str | None]:
    env = inputs.env
    # Names made from the registration's: each must still be a valid name.
    longest_api = max(len(api.id) for api in registration.apis)
    if len(labels.registration_route_name(name, "x" * longest_api)) > 120:
        return _refused(
            cond.INVALID_SPEC,
            f"metadata.name {name!r}: a ServiceRegistration's name and API ids make its route "
            "names: with '-<api id>' they must be at most 120 characters",
        )
    if inputs.services is not None:
        for index, api in enumerate(registration.apis):
            ref = api.service_ref
            if ref is not None and ref.name not in inputs.services:
                return _refused(
                    cond.DEPENDENCY_NOT_FOUND,
                    f"Service {ref.name} (spec.apis[{index}].serviceRef) does not exist in "
                    f"namespace {namespace}: the API is routed as soon as it appears",
                    spec_reason=cond.AWAITING_STATUS,
                )
    # Each API's spec document.
    hashes: dict[str, str] = {}
    documents: dict[str, bytes] = {}
    unread: list[str] = []
    for index, api in enumerate(registration.apis):
        where = f"spec.apis[{index}].spec"
        source = inputs.specs.get((name, api.id))
        if source is None:
            unread.append(api.id)
            continue
        if isinstance(source, ReconcileError):
            spec_valid = False if source.reason == cond.INVALID_SPEC else None
            return _refused(
                source.reason,
                f"{where}: {source.message}",
                spec_valid=spec_valid,
                spec_reason=source.reason,
                spec_message=f"{where}: {source.message}",
            )
        found = specs.validate_spec(source, api.spec.media_type, api.protocol)
        if not found.valid:
            at = f" at {found.path}" if found.path else ""
            message = f"{where} (API {api.id}) is not a valid {found.family} document{at}: "
            message += found.message
            return _refused(
                cond.INVALID_SPEC,
                message,
                spec_valid=False,
                spec_reason=cond.INVALID_SPEC,
                spec_message=message,
            )
        hashes[api.id] = found.digest
        documents[api.id] = source
    # Routes, with paths no accepted registration (nor the twin, nor the catalog) holds.
    routes: list[ProxyRoute] = []
    own_paths: dict[str, str] = {}
    for index, api in enumerate(registration.apis):
        if api.expose is None:
            continue
        path = api.expose.path
        held = next((held for held in claimed if _overlaps(path, held)), None)
        if held is not None:
            return _refused(
                cond.INVALID_REFERENCE,
                f"spec.apis[{index}].expose.path {path} overlaps {held}, which "
                f"{claimed[held]} holds: choose another path",
            )
        mine = next((other for other in own_paths if _overlaps(path, other)), None)
        if mine is not None:
            return _refused(
                cond.INVALID_SPEC,
                f"spec.apis[{index}].expose.path {path} overlaps {mine} of API "
                f"{own_paths[mine]} in the same registration",
            )
        own_paths[path] = api.id
        try:
            routes.append(
                ProxyRoute(
                    name=labels.registration_route_name(name, api.id),
                    path=path,
                    backend=_target_backend(api, env, namespace),
                    roles=api.expose.roles,
                    public=api.expose.public,
                    rate_limit=RateLimit.of(api.expose.rate_limit),
                )
            )
        except ValidationError as error:  # the target URL's parts must fit haproxy.cfg too
            where = "url" if api.url is not None else "serviceRef"
            return _refused(
                cond.INVALID_SPEC,
                f"spec.apis[{index}].{where} cannot be routed: "
                f"{describe_validation_error(error, 'backend')}",
            )
    # MQTT APIs: a login each, named after the registration and the API.
    logins = registration_logins(name, registration)
    for login in logins:
        if login.secret in secrets_claimed:
            return _refused(
                cond.INVALID_REFERENCE,
                f"The login Secret {login.secret} is already another registration's (their "
                "names and API ids join to the same name): rename one",
            )
    apis: list[ApiVerdict] = []
    entry_apis: list[dict[str, Any]] = []
    for api in registration.apis:
        route_url = f"{public_url}{api.expose.path}" if api.expose is not None else None
        login_secret = labels.registration_login_secret_name(name, api.id) if api.access else None
        apis.append(
            ApiVerdict(
                api.id,
                api.protocol,
                route_url,
                login_secret,
                hashes.get(api.id),
                True if api.id in hashes else None,
            )
        )
        if api.protocol == "MQTT":
            url = f"mqtt://{env.broker_host(namespace)}:{env.broker_port}"
        else:
            url = route_url or _target_url(api, env, namespace)
        spec_doc: dict[str, Any] = {"mediaType": api.spec.media_type}
        if api.spec.url:
            spec_doc["url"] = api.spec.url
        schema = _embedded(documents[api.id]) if api.id in documents else None
        if schema is not None:
            spec_doc["schema"] = schema
        entry_apis.append(
            {
                "id": api.id,
                "title": api.title or "",
                "description": api.description or "",
                "protocol": api.protocol,
                "url": url,
                "spec": spec_doc,
                "meta": api.meta,
            }
        )
    entry: dict[str, Any] = {
        "id": name,
        "type": registration.type,
        "title": registration.title or "",
        "description": registration.description or "",
        "meta": registration.meta,
        "apis": entry_apis,
        "doc": registration.doc or "",
        "owner": f"ServiceRegistration/{name}",
    }
    if registration.probe is not None:
        target = next(api.service_ref for api in registration.apis if api.service_ref)
        assert target is not None, "the model requires a serviceRef for a probe"
        host = env.service_host(namespace, target.name)
        entry["probe"] = {
            "url": f"http://{host}:{target.port}{registration.probe.path}",
            "intervalSeconds": registration.probe.interval_seconds,
        }
    try:  # each entry alone, so one that the catalog refuses never blocks the others
        ServiceEntry.model_validate(entry)
    except ValidationError as error:
        return _refused(
            cond.INVALID_SPEC,
            f"The catalog refuses the entry: {describe_validation_error(error, 'entry')}",
        )
    note = (
        f"The spec of {', '.join(unread)} is fetched by the operator when applied"
        if unread
        else None
    )
    return routes, logins, entry, apis, note


def platform_routes(spec: SpineSpec, env: Environment, namespace: str, spine: str) -> list[tuple]:
    """(route, owner) of the twin API (with `auth` only) and the catalog: reads for any valid
    token (the twin's for its read roles), writes with the write roles."""
    owner = f"Spine/{spine}"
    found: list[tuple[ProxyRoute, str]] = []
    twin_host = env.proxy_backend_host(namespace, labels.TWIN_NAME, env.twin_host_override)
    catalog_host = env.proxy_backend_host(namespace, labels.CATALOG_NAME, env.catalog_host_override)
    if spec.auth is not None:
        twin_backend = ProxyBackend(host=twin_host, port=env.twin_port)
        found += [
            (
                ProxyRoute(
                    name="spine-twin-read",
                    path=TWIN_PATH,
                    methods=READ_METHODS,
                    backend=twin_backend,
                    roles=spec.auth.twin.read_roles,
                ),
                owner,
            ),
            (
                ProxyRoute(
                    name="spine-twin-write",
                    path=TWIN_PATH,
                    methods=WRITE_METHODS,
                    backend=twin_backend,
                    roles=spec.auth.twin.write_roles,
                    backend_token_env=TWIN_TOKEN_ENV,
                ),
                owner,
            ),
        ]
    catalog_backend = ProxyBackend(host=catalog_host, port=env.catalog_port)
    write_roles = [spec.auth.catalog.write_role] if spec.auth is not None else []
    found += [
        (
            ProxyRoute(
                name="spine-catalog-read",
                path=CATALOG_PATH,
                methods=READ_METHODS,
                backend=catalog_backend,
            ),
            owner,
        ),
        (
            ProxyRoute(
                name="spine-catalog-write",
                path=CATALOG_PATH,
                methods=WRITE_METHODS,
                backend=catalog_backend,
                roles=write_roles,
            ),
            owner,
        ),
    ]
    return found


def proxy_auth(spec: SpineSpec, keys: KeysInput) -> ProxyAuth | None:
    """The OIDC checks; no keys yet leaves `keys` empty, so every protected route answers 503."""
    if spec.auth is None:
        return None
    return ProxyAuth(
        issuer=spec.auth.issuer,
        audiences=spec.auth.audience,
        roles_claim=spec.auth.roles_claim,
        keys=[key for key in keys.keys if key.alg in spec.auth.algorithms],
    )


def haproxy_inputs(
    spec: SpineSpec, env: Environment, keys: KeysInput, routes: list[ProxyRoute]
) -> ProxyInputs:
    return ProxyInputs(
        bind_address=env.proxy_bind_address,
        port=env.proxy_port,
        tls_cert_file=(
            str(PurePosixPath(env.proxy_tls_dir) / "tls.pem") if spec.proxy.tls else None
        ),
        keys_dir=str(PurePosixPath(env.proxy_run_dir) / "keys"),
        exporter_port=env.proxy_exporter_port,
        auth=proxy_auth(spec, keys),
        routes=sorted(routes, key=lambda route: route.name),
    )


def deployed_keys(config_map: dict[str, Any] | None) -> list[VerifyKey]:
    """The keys in a proxy ConfigMap the operator applied earlier (none if it cannot tell)."""
    raw = ((config_map or {}).get("data") or {}).get(labels.PROXY_CONFIG_FILE)
    if not raw:
        return []
    try:
        config = ProxyConfig.model_validate_json(raw)
        return [
            VerifyKey(kid=key.kid, alg=key.alg, pem=config.key_files[key.file])  # type: ignore[arg-type]
            for key in config.keys
            if key.file in config.key_files
        ]
    except (ValidationError, ValueError):
        return []


def proxy_config(
    env: Environment, inputs: ProxyInputs, haproxy_cfg: str, owners: dict[str, str]
) -> ProxyConfig:
    run_dir = PurePosixPath(env.proxy_run_dir)
    secrets_dir = PurePosixPath(env.proxy_secrets_dir)
    keys = inputs.auth.keys if inputs.auth is not None else []
    return ProxyConfig.model_validate(
        {
            "http": {
                "host": env.proxy_bind_address,
                "port": env.proxy_admin_port,
                "adminTokenFile": str(secrets_dir / "token" / "token"),
            },
            "haproxy": {
                "binary": env.haproxy_binary,
                "configFile": str(run_dir / "haproxy.cfg"),
                "keysDir": inputs.keys_dir,
                "masterSocket": str(run_dir / "master.sock"),
                "exporterUrl": f"http://127.0.0.1:{env.proxy_exporter_port}/metrics",
            },
            "haproxyCfg": haproxy_cfg,
            "keyFiles": {key.file_name(): key.pem for key in keys},
            "keys": [{"kid": key.kid, "alg": key.alg, "file": key.file_name()} for key in keys],
            "routes": [
                {"name": route.name, "path": route.path, "owner": owners.get(route.name)}
                for route in inputs.routes
            ],
        }
    )


def catalog_config(
    spec: SpineSpec, env: Environment, namespace: str, entries: list[dict[str, Any]]
) -> CatalogConfig:
    secrets_dir = PurePosixPath(env.catalog_secrets_dir)
    return CatalogConfig.model_validate(
        {
            "http": {
                "host": env.catalog_bind_address,
                "port": env.catalog_port,
                "adminTokenFile": str(secrets_dir / "token" / "token"),
            },
            "catalogId": f"spine-{namespace}",
            "description": f"Services of namespace {namespace}",
            "mqtt": {
                "host": env.broker_host(namespace),
                "port": env.broker_port,
                "username": CATALOG_USERNAME,
                "passwordFile": str(secrets_dir / "mqtt" / "password"),
                "clientId": CATALOG_USERNAME,
            },
            "announcePrefix": ANNOUNCE_PREFIX,
            **({"writeRole": spec.auth.catalog.write_role} if spec.auth is not None else {}),
            "storeFile": str(PurePosixPath(env.catalog_data_dir) / "external.json"),
            "entries": entries,
        }
    )


def twin_entry(
    spec: SpineSpec, env: Environment, namespace: str, spine: str, public_url: str
) -> dict[str, Any]:
    url = f"{public_url}{TWIN_PATH}" if spec.auth is not None else env.twin_url(namespace)
    return {
        "id": TWIN_ENTRY_ID,
        "type": "spine:twin",
        "title": "Digital twin API",
        "description": "The namespace's things: reported and desired state, search, events "
        "(Eclipse Ditto compatible HTTP API).",
        "apis": [
            {
                "id": "things",
                "title": "Things",
                "protocol": "HTTP",
                "url": url,
                "spec": {"mediaType": "application/json"},
            }
        ],
        "owner": f"Spine/{spine}",
    }


def _admin_only_ingress(
    name: str, namespace: str, component: str, spine: str, ports: list[int], env: Environment
) -> dict[str, Any]:
    return workload.build_ingress_policy(
        name,
        namespace,
        component,
        spine,
        ports,
        env.operator_namespace,
        same_namespace=False,
        monitoring_namespace=env.monitoring_namespace,
    )


def build_proxy_objects(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    spine: str,
    config: ProxyConfig,
    digests: list[str],
) -> tuple[list[dict[str, Any]], str]:
    """The proxy's ConfigMap, Services, Deployment and NetworkPolicy; and its restart checksum."""
    document = workload.config_document(config)
    config_map = workload.build_config_map(
        labels.PROXY_CONFIG_NAME,
        namespace,
        PROXY_COMPONENT,
        spine,
        {labels.PROXY_CONFIG_FILE: document},
    )
    route_port = {"name": "proxy", "port": env.proxy_port, "targetPort": "proxy", "protocol": "TCP"}
    service = workload.build_service(
        labels.PROXY_NAME, namespace, PROXY_COMPONENT, spine, [route_port]
    )
    service["spec"]["type"] = spec.proxy.service_type
    # The supervisor's /status and admin endpoint: never on a NodePort or LoadBalancer.
    admin_port = {"name": "http", "port": env.proxy_admin_port, "targetPort": "http"}
    admin_service = workload.build_service(
        labels.PROXY_ADMIN_SERVICE, namespace, PROXY_COMPONENT, spine, [admin_port]
    )
    secrets_dir = PurePosixPath(env.proxy_secrets_dir)
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": env.proxy_config_dir, "readOnly": True},
        {"name": "token", "mountPath": str(secrets_dir / "token"), "readOnly": True},
        # haproxy.cfg, the key files and the master socket: written at run time.
        {"name": "run", "mountPath": env.proxy_run_dir},
        workload.TMP_MOUNT,
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": labels.PROXY_CONFIG_NAME}},
        workload.secret_volume("token", labels.PROXY_TOKEN_SECRET),
        {"name": "run", "emptyDir": {"sizeLimit": "32Mi"}},
        workload.TMP_VOLUME,
    ]
    if spec.proxy.tls is not None:
        # HAProxy loads `<crt>.key` beside the certificate (ssl-load-extra-files).
        mounts.append({"name": "tls", "mountPath": env.proxy_tls_dir, "readOnly": True})
        volumes.append(
            {
                "name": "tls",
                "secret": {
                    "secretName": spec.proxy.tls.secret_name,
                    "items": [
                        {"key": "tls.crt", "path": "tls.pem"},
                        {"key": "tls.key", "path": "tls.pem.key"},
                    ],
                    "defaultMode": 0o440,
                },
            }
        )
    container = workload.container(
        "proxy",
        env.runtime_image,
        [
            "spine-runtime",
            "proxy",
            "--config",
            f"{env.proxy_config_dir}/{labels.PROXY_CONFIG_FILE}",
        ],
        [
            {"name": "proxy", "containerPort": env.proxy_port, "protocol": "TCP"},
            {"name": "http", "containerPort": env.proxy_admin_port, "protocol": "TCP"},
        ],
        mounts,
        resources(spec.proxy.resources),
        workload.http_probes(),
    )
    if spec.auth is not None:
        container["env"] = [
            {
                "name": TWIN_TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": labels.TWIN_TOKENS_SECRET, "key": "write"}},
            }
        ]
    checksum = workload.restart_checksum(config, PROXY_LIVE_FIELDS, *digests)
    template = workload.PodTemplate(
        component=PROXY_COMPONENT,
        instance=spine,
        uid=RUNTIME_UID,
        containers=[container],
        volumes=volumes,
        checksum=checksum,
    )
    deployment = workload.build_deployment(
        labels.PROXY_NAME, namespace, template, spec.proxy.replicas
    )
    policy = _admin_only_ingress(
        labels.PROXY_NAME, namespace, PROXY_COMPONENT, spine, [env.proxy_admin_port], env
    )
    # The routes' port is open to every client: the proxy itself admits or refuses.
    policy["spec"]["ingress"].append({"ports": [{"port": env.proxy_port, "protocol": "TCP"}]})
    return [config_map, service, admin_service, deployment, policy], checksum


def build_catalog_objects(
    env: Environment,
    namespace: str,
    spine: str,
    config: CatalogConfig,
    digests: list[str],
) -> tuple[list[dict[str, Any]], str]:
    """The catalog's ConfigMap, Service, Deployment and NetworkPolicy; and its checksum."""
    config_map = workload.build_config_map(
        labels.CATALOG_CONFIG_NAME,
        namespace,
        CATALOG_COMPONENT,
        spine,
        {labels.CATALOG_CONFIG_FILE: workload.config_document(config)},
    )
    http_port = {"name": "http", "port": env.catalog_port, "targetPort": "http", "protocol": "TCP"}
    service = workload.build_service(
        labels.CATALOG_NAME, namespace, CATALOG_COMPONENT, spine, [http_port]
    )
    secrets_dir = PurePosixPath(env.catalog_secrets_dir)
    container = workload.container(
        "catalog",
        env.runtime_image,
        [
            "spine-runtime",
            "catalog",
            "--config",
            f"{env.catalog_config_dir}/{labels.CATALOG_CONFIG_FILE}",
        ],
        [{"name": "http", "containerPort": env.catalog_port, "protocol": "TCP"}],
        [
            {"name": "config", "mountPath": env.catalog_config_dir, "readOnly": True},
            {"name": "token", "mountPath": str(secrets_dir / "token"), "readOnly": True},
            {"name": "mqtt", "mountPath": str(secrets_dir / "mqtt"), "readOnly": True},
            {"name": "data", "mountPath": env.catalog_data_dir},
            workload.TMP_MOUNT,
        ],
        {
            "requests": {"cpu": "20m", "memory": "48Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        workload.http_probes(),
    )
    checksum = workload.restart_checksum(config, CATALOG_LIVE_FIELDS, *digests)
    template = workload.PodTemplate(
        component=CATALOG_COMPONENT,
        instance=spine,
        uid=RUNTIME_UID,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": labels.CATALOG_CONFIG_NAME}},
            workload.secret_volume("token", labels.CATALOG_TOKEN_SECRET),
            workload.secret_volume("mqtt", catalog_login().secret),
            {"name": "data", "emptyDir": {"sizeLimit": "64Mi"}},
            workload.TMP_VOLUME,
        ],
        checksum=checksum,
    )
    deployment = workload.build_deployment(labels.CATALOG_NAME, namespace, template, 1)
    policy = _admin_only_ingress(
        labels.CATALOG_NAME, namespace, CATALOG_COMPONENT, spine, [env.catalog_port], env
    )
    # Only the proxy (besides the operator and monitoring): clients go through its checks.
    policy["spec"]["ingress"][0]["from"].insert(
        0, {"podSelector": {"matchLabels": labels.selector(PROXY_COMPONENT, spine)}}
    )
    return [config_map, service, deployment, policy], checksum


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def within_embedding_budget(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries with their specs embedded while the catalog's config has room, oldest
    registration first; later ones list their spec by URL (and media type) only."""
    room = MAX_EMBEDDED_TOTAL_BYTES
    kept: list[dict[str, Any]] = []
    for entry in entries:
        apis = []
        for api in entry["apis"]:
            schema = api["spec"].get("schema")
            if schema is not None:
                size = len(json.dumps(schema))
                if size > room:
                    api = {**api, "spec": {k: v for k, v in api["spec"].items() if k != "schema"}}
                else:
                    room -= size
            apis.append(api)
        kept.append({**entry, "apis": apis})
    return kept


def fitting_proxy_config(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    spine_name: str,
    inputs: ProxyPlanInputs,
    selection: Selection,
) -> tuple[ProxyInputs, ProxyConfig]:
    """The proxy's inputs and config document, within a ConfigMap's size: while the rendered
    document is too large, the youngest routed registrations are refused (ProxyConfigFull), so
    the older ones keep their routes and the proxy keeps working."""
    platform = platform_routes(spec, env, namespace, spine_name)
    if spec.auth is not None:  # without an issuer the flow engine's plan refuses to expose
        platform += flow_routes(inputs.flows, env, namespace)
    while True:
        routed = [
            name
            for name in selection.accepted
            if any(owner == f"ServiceRegistration/{name}" for owner in selection.owners.values())
        ]
        excess = len(selection.routes) + len(platform) - MAX_PROXY_ROUTES
        if excess > 0:  # more routes than the proxy takes: the youngest wait
            _refuse_full(selection, routed, routed[-excess:])
            continue
        routes = list(selection.routes)
        owners = dict(selection.owners)
        for route, owner in platform:
            routes.append(route)
            owners[route.name] = owner
        haproxy = haproxy_inputs(spec, env, inputs.keys, routes)
        haproxy_cfg = render_haproxy_config(haproxy)
        size = len(haproxy_cfg)  # the document holds it escaped: never smaller
        if size <= MAX_CONFIG_DOCUMENT_BYTES or not routed:
            config = proxy_config(env, haproxy, haproxy_cfg, owners)
            size = len(workload.config_document(config))
            if size <= MAX_CONFIG_DOCUMENT_BYTES or not routed:
                return haproxy, config
        # Each routed registration's share of the document, to drop enough at once.
        share = size / len(routed)
        count = min(len(routed), int((size - MAX_CONFIG_DOCUMENT_BYTES) / share) + 1)
        _refuse_full(selection, routed, routed[-count:])


def _refuse_full(selection: Selection, routed: list[str], youngest: list[str]) -> None:
    kept = len(routed) - len(youngest)
    for name in youngest:
        selection.refuse(
            name,
            RegistrationVerdict(
                cond.PROXY_CONFIG_FULL,
                f"The proxy has no room for this registration's routes ({MAX_PROXY_ROUTES} "
                f"routes and a 1 MiB ConfigMap at most); {kept} older registrations are "
                "routed. Remove routes or roles, or split the services across namespaces",
            ),
        )


def proxy_wanted(inputs: ProxyPlanInputs, spec: SpineSpec) -> bool:
    """Whether the namespace pays for a proxy and a catalog: a registration, or `auth`."""
    live = [item for item in inputs.registrations if not item["metadata"].get("deletionTimestamp")]
    return bool(live) or spec.auth is not None


def plan_proxy(inputs: ProxyPlanInputs) -> Plan | Refusal:
    """The proxy and the catalog (configs, Services, Deployments, NetworkPolicies, their tokens,
    one login per MQTT API and the catalog's), or nothing while the namespace uses neither;
    `facts["registrations"]` has each registration's verdict."""
    metadata_ = inputs.spine["metadata"]
    namespace, spine_name = metadata_["namespace"], metadata_["name"]
    try:
        spec = SpineSpec.model_validate(inputs.spine.get("spec") or {})
    except ValidationError:
        return DependencyNotReady(
            f"Spine {spine_name} has an invalid spec (its status says what to fix); the proxy "
            "and the catalog are applied once it is valid"
        )
    if not proxy_wanted(inputs, spec):
        return Plan(objects=[], facts={"registrations": {}})
    env = inputs.env
    public_url = env.proxy_public_url(namespace, spec.proxy.tls is not None)
    selection = select_registrations(inputs, namespace, public_url)
    digests: dict[str, str] = {}
    try:
        proxy_digest = inputs.proxy_token.require(("token",), "the proxy")
        catalog_digest = inputs.catalog_token.require(("token",), "the catalog")
        catalog_login_digest = inputs.catalog_login.require(("password",), "the catalog's login")
        digests[inputs.proxy_token.name] = proxy_digest
        digests[inputs.catalog_token.name] = catalog_digest
        digests[inputs.catalog_login.name] = catalog_login_digest
        proxy_digests = [proxy_digest]
        if spec.auth is not None:
            twin_digest = inputs.twin_tokens.require(("write",), "the proxy's twin write route")
            digests[inputs.twin_tokens.name] = twin_digest
            proxy_digests.append(twin_digest)
        if spec.proxy.tls is not None:
            tls = inputs.tls or SecretInput(spec.proxy.tls.secret_name, None)
            tls_digest = tls.require(("tls.crt", "tls.key"), "the proxy's TLS listener")
            digests[tls.name] = tls_digest
            proxy_digests.append(tls_digest)
        for login in selection.logins:
            found = inputs.logins.get(login.secret) or SecretInput(login.secret, None)
            digests[login.secret] = found.require(("password",), f"login {login.username}")
    except ReconcileError as error:
        return error
    try:
        haproxy, config = fitting_proxy_config(spec, env, namespace, spine_name, inputs, selection)
        exposed = (
            flow_catalog_entries(inputs.flows, env, namespace, public_url)
            if spec.auth is not None  # else no flow is exposed (the flow engine's plan says so)
            else []
        )
        entries = [
            twin_entry(spec, env, namespace, spine_name, public_url),
            *within_embedding_budget([*selection.entries, *exposed]),
        ]
        catalog = catalog_config(spec, env, namespace, entries)
    except ValidationError as error:  # each registration passed alone: only their sum can fail
        return InvalidSpec(
            f"The registrations together: {describe_validation_error(error, 'registrations')}"
        )
    routes = haproxy.routes
    owners = {route.name: info.owner for route, info in zip(routes, config.routes, strict=True)}
    proxy_objects, proxy_checksum = build_proxy_objects(
        spec, env, namespace, spine_name, config, proxy_digests
    )
    catalog_objects, catalog_checksum = build_catalog_objects(
        env, namespace, spine_name, catalog, [catalog_digest, catalog_login_digest]
    )
    pushes = []
    if (
        inputs.existing_proxy_ready
        and workload.pod_checksum(inputs.existing_proxy) == proxy_checksum
    ):
        pushes.append(
            ConfigPush(
                env.proxy_url(namespace),
                (inputs.proxy_token.values or {}).get("token", ""),
                workload.config_document(config),
            )
        )
    if (
        inputs.existing_catalog_ready
        and workload.pod_checksum(inputs.existing_catalog) == catalog_checksum
    ):
        pushes.append(
            ConfigPush(
                env.catalog_url(namespace),
                (inputs.catalog_token.values or {}).get("token", ""),
                workload.config_document(catalog),
            )
        )
    generated = [
        workload.build_generated_secret(
            labels.PROXY_TOKEN_SECRET, namespace, PROXY_COMPONENT, spine_name, {"token": ""}
        ),
        workload.build_generated_secret(
            labels.CATALOG_TOKEN_SECRET, namespace, CATALOG_COMPONENT, spine_name, {"token": ""}
        ),
        *(
            build_login_secret(namespace, login, spine_name, env, "")
            for login in [catalog_login(), *selection.logins]
        ),
    ]
    return Plan(
        objects=[*proxy_objects, *catalog_objects],
        generated=generated,
        logins=[catalog_login(), *selection.logins],
        push=pushes[0] if pushes else None,
        more_pushes=pushes[1:],
        secret_digests=digests,
        facts={
            "registrations": selection.verdicts,
            "proxyUrl": public_url,
            "catalogUrl": f"{public_url}{CATALOG_PATH}/",
            "keys": len(haproxy.auth.keys) if haproxy.auth is not None else None,
            "keysError": inputs.keys.error,
            "keysFetchedAt": _timestamp(inputs.keys.fetched_at),
            "issuer": spec.auth.issuer if spec.auth is not None else None,
            "routes": {route.name: owners.get(route.name) for route in routes},
        },
    )

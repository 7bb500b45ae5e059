"""What each kind's plan reads from the cluster: the I/O half of a reconcile, reads only.

The one exception is Secrets the operator generates: they are created here, once (never
rewritten), because their values are inputs of the plan (digests in pod checksums, the token a
config push carries). Each function returns the kind's `...Inputs` for its pure plan.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError

from spine_operator import labels, specfetch
from spine_operator.api.gateway import GatewaySpec
from spine_operator.api.kinds import (
    API_VERSION,
    FLOW,
    GATEWAY,
    SERVICE_REGISTRATION,
    SPINE,
    TWINMODEL,
)
from spine_operator.api.serviceregistration import RegistrationApi, ServiceRegistrationSpec
from spine_operator.api.spine import SpineSpec
from spine_operator.context import CONTEXT
from spine_operator.desired import broker, flow, gateway, proxy, twin, workload
from spine_operator.desired.common import controller_of, oldest
from spine_operator.desired.logins import (
    Login,
    build_login_secret,
    gateway_login,
    gateway_username,
    generate_password,
    twin_login,
)
from spine_operator.desired.plan import SecretInput
from spine_operator.errors import DependencyNotFound, ReconcileError
from spine_operator.k8s import Kubernetes
from spine_operator.readiness import deployment_ready, statefulset_ready


async def read_resource(kind: str, k8s: Kubernetes, namespace: str, name: str) -> dict | None:
    return await k8s.get(API_VERSION, kind, namespace, name)


async def namespace_spine(k8s: Kubernetes, namespace: str) -> dict[str, Any] | None:
    """The namespace's Spine (the oldest, if a second one was applied by mistake)."""
    return oldest(await k8s.list(API_VERSION, SPINE.kind, namespace))


async def storage_of(
    k8s: Kubernetes, namespace: str, pvc_name: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A PVC and its storage class, for the plan's volume-size decision."""
    pvc = await k8s.get("v1", "PersistentVolumeClaim", namespace, pvc_name)
    class_name = ((pvc or {}).get("spec") or {}).get("storageClassName")
    storage_class = (
        await k8s.get("storage.k8s.io/v1", "StorageClass", None, class_name) if class_name else None
    )
    return pvc, storage_class


async def login_secret(k8s: Kubernetes, namespace: str, login: Login, owner: dict) -> SecretInput:
    obj = build_login_secret(
        namespace, login, owner["metadata"]["name"], CONTEXT.environment, generate_password()
    )
    secret = await k8s.get_or_create(obj, owner=owner)
    return SecretInput.of(login.secret, secret)


async def generated_secret(k8s: Kubernetes, obj: dict[str, Any], owner: dict) -> SecretInput:
    return SecretInput.of(obj["metadata"]["name"], await k8s.get_or_create(obj, owner=owner))


async def gather_spine(k8s: Kubernetes, body: dict[str, Any]) -> broker.SpineInputs:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    spec = SpineSpec.model_validate(body.get("spec") or {}).broker  # invalid: InvalidSpec
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.BROKER_NAME)
    owner = controller_of(existing, SPINE.kind)
    if owner is not None and owner[0] != body["metadata"].get("uid"):
        # Another Spine runs the broker: generate nothing; the plan refuses this one.
        admin = SecretInput(broker.admin_secret_name(spec), None)
        return broker.SpineInputs(body, CONTEXT.environment, admin, None, existing)
    if spec.admin_secret_name:
        admin_secret = await k8s.get("v1", "Secret", namespace, spec.admin_secret_name)
        admin = SecretInput.of(spec.admin_secret_name, admin_secret, "spec.broker.adminSecretName")
    else:
        admin = await generated_secret(
            k8s,
            broker.build_admin_secret(namespace, name, broker.generate_password()),
            body,
        )
    tls = None
    if spec.tls is not None:
        tls_secret = await k8s.get("v1", "Secret", namespace, spec.tls.secret_name)
        tls = SecretInput.of(spec.tls.secret_name, tls_secret, "spec.broker.tls.secretName")
    pvc, storage_class = await storage_of(k8s, namespace, labels.broker_pvc_name())
    return broker.SpineInputs(body, CONTEXT.environment, admin, tls, existing, pvc, storage_class)


async def read_namespace_spine(k8s: Kubernetes, namespace: str, _: str) -> dict[str, Any] | None:
    """What an aggregate (the twin, the flow engine) reads under its lock: it is keyed by
    namespace, and its owner is the namespace's Spine."""
    return await namespace_spine(k8s, namespace)


async def gather_twin(k8s: Kubernetes, spine: dict[str, Any]) -> twin.TwinInputs:
    namespace, name = spine["metadata"]["namespace"], spine["metadata"]["name"]
    models = await k8s.list(API_VERSION, TWINMODEL.kind, namespace)
    tokens = await generated_secret(
        k8s,
        twin.build_tokens_secret(namespace, name, twin.generate_token(), twin.generate_token()),
        spine,
    )
    login = await login_secret(k8s, namespace, twin_login(), spine)
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.TWIN_NAME)
    publishers = twin.numbered_publishers(
        await k8s.list(API_VERSION, GATEWAY.kind, namespace),
        await k8s.list(API_VERSION, FLOW.kind, namespace),
        twin.flow_engine_replicas(spine),
    )
    return twin.TwinInputs(spine, models, CONTEXT.environment, tokens, login, existing, publishers)


async def gather_gateway(k8s: Kubernetes, body: dict[str, Any]) -> gateway.GatewayInputs:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    env = CONTEXT.environment
    spine = await namespace_spine(k8s, namespace)
    models = await k8s.list(API_VERSION, TWINMODEL.kind, namespace)
    others = [
        item
        for item in await k8s.list(API_VERSION, GATEWAY.kind, namespace)
        if item["metadata"]["name"] != name
    ]
    # What the operator generates is stood in for until every check passed.
    pending = {
        labels.login_secret_name(gateway_username(name)): ("password",),
        labels.gateway_admin_secret_name(name): ("token",),
    }
    secrets = {
        name_: SecretInput(name_, dict.fromkeys(keys, "-")) for name_, keys in pending.items()
    }
    spec = None
    with contextlib.suppress(ValidationError):
        spec = GatewaySpec.model_validate(body.get("spec") or {})
    for mount in gateway.user_secret_mounts(spec, env, name) if spec is not None else []:
        found = await k8s.get("v1", "Secret", namespace, mount.secret_name)
        secrets[mount.secret_name] = SecretInput.of(mount.secret_name, found, mount.field)
    inputs = gateway.GatewayInputs(body, env, spine, models, others, secrets)
    if isinstance(gateway.plan_gateway(inputs), ReconcileError):
        return inputs  # refused before anything is generated for it; the plan says why
    assert spec is not None and spine is not None, "the plan refuses these"
    twin_namespace = SpineSpec.model_validate(spine.get("spec") or {}).twin_namespace(namespace)
    config = gateway.gateway_config(spec, env, namespace, name, twin_namespace)
    login = gateway_login(name, config.things(), config.writable_things())
    secrets[gateway.login_secret_name(name)] = await login_secret(k8s, namespace, login, body)
    token = await generated_secret(
        k8s, gateway.build_admin_token_secret(namespace, name, gateway.generate_token()), body
    )
    secrets[token.name] = token
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.gateway_name(name))
    pvc, storage_class = await storage_of(k8s, namespace, labels.gateway_pvc_name(name))
    return gateway.GatewayInputs(
        body,
        env,
        spine,
        models,
        others,
        secrets,
        existing,
        statefulset_ready(existing)[0],
        pvc,
        storage_class,
    )


async def gather_flows(k8s: Kubernetes, spine: dict[str, Any]) -> flow.FlowInputs:
    """Every Flow, TwinModel and ServiceRegistration of the namespace, the engine's token, each
    flow's login Secret (generated once, one per flow and replica), the live StatefulSet and a
    Deployment left by an operator before replicas. Nothing is generated while no Flow exists."""
    namespace, name = spine["metadata"]["namespace"], spine["metadata"]["name"]
    env = CONTEXT.environment
    flows = await k8s.list(API_VERSION, FLOW.kind, namespace)
    models = await k8s.list(API_VERSION, TWINMODEL.kind, namespace)
    registrations = await k8s.list(API_VERSION, SERVICE_REGISTRATION.kind, namespace)
    token = SecretInput(labels.FLOW_ENGINE_TOKEN_SECRET, None)
    inputs = flow.FlowInputs(spine, flows, models, env, token, {}, registrations=registrations)
    if not flows:
        return inputs
    token = await generated_secret(
        k8s,
        workload.build_generated_secret(
            labels.FLOW_ENGINE_TOKEN_SECRET,
            namespace,
            flow.COMPONENT,
            name,
            {"token": twin.generate_token()},
        ),
        spine,
    )
    spec = SpineSpec.model_validate(spine.get("spec") or {})
    _, _, logins = flow.select_flows(inputs, spec, namespace)
    secrets = {}
    for login in logins:
        secret = await login_secret(k8s, namespace, login, spine)
        secrets[secret.name] = secret
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.FLOW_ENGINE_NAME)
    legacy = await k8s.get("apps/v1", "Deployment", namespace, labels.FLOW_ENGINE_NAME)
    return flow.FlowInputs(
        spine,
        flows,
        models,
        env,
        token,
        secrets,
        existing,
        deployment_ready(existing)[0],
        legacy_deployment=legacy is not None,
        registrations=registrations,
    )


async def read_spec(
    k8s: Kubernetes,
    namespace: str,
    api: RegistrationApi,
    index: int,
    allowed_hosts: set[str],
    allowed_prefixes: list[str],
) -> proxy.SpecSource:
    """One API's spec document: inline, from a ConfigMap, or fetched from an allowed URL."""
    source = api.spec
    if source.value is not None:
        return source.value.encode()
    if source.config_map_key_ref is not None:
        ref = source.config_map_key_ref
        config_map = await k8s.get("v1", "ConfigMap", namespace, ref.name)
        where = f"spec.apis[{index}].spec.configMapKeyRef"
        if config_map is None:
            return DependencyNotFound(
                f"ConfigMap {ref.name} ({where}) does not exist in namespace {namespace}: the "
                "spec is read as soon as it appears"
            )
        data = config_map.get("data") or {}
        if ref.key not in data:
            return DependencyNotFound(
                f"ConfigMap {ref.name} ({where}) has no key {ref.key}: the spec is read as "
                "soon as it has"
            )
        return str(data[ref.key]).encode()
    assert source.url is not None, "the model requires one source"
    try:
        return await specfetch.fetch_spec(
            source.url, allowed_hosts=allowed_hosts, allowed_prefixes=allowed_prefixes
        )
    except ReconcileError as error:
        return error


def service_hosts(namespace: str, services: dict[str, dict[str, Any]]) -> set[str]:
    """The DNS names of the namespace's Services: where a spec URL may point inside it."""
    return {
        host
        for name in services
        for host in (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local")
    }


async def gather_proxy(k8s: Kubernetes, spine: dict[str, Any]) -> proxy.ProxyPlanInputs:
    """Every ServiceRegistration (and Flow: an http source may be exposed), the namespace's
    Services, each API's spec, the keys the key refresher holds, the tokens and logins
    (generated once) and the live Deployments. Nothing is generated while the namespace has no
    registration and no `auth`."""
    namespace, name = spine["metadata"]["namespace"], spine["metadata"]["name"]
    env = CONTEXT.environment
    registrations = await k8s.list(API_VERSION, SERVICE_REGISTRATION.kind, namespace)
    absent = SecretInput("", None)
    inputs = proxy.ProxyPlanInputs(
        spine, registrations, env, {}, None, proxy.KeysInput(), absent, absent, absent, absent
    )
    try:
        spec = SpineSpec.model_validate(spine.get("spec") or {})
    except ValidationError:
        return inputs  # the plan refuses it and says why
    wanted = proxy.proxy_wanted(inputs, spec)
    # The key refresher follows the Spine's issuer from here: a new one is fetched at once.
    CONTEXT.keys.watch(namespace, spec.auth if wanted else None)
    if not wanted:
        return inputs
    services = {
        item["metadata"]["name"]: item for item in await k8s.list("v1", "Service", namespace)
    }
    hosts = service_hosts(namespace, services)
    specs: dict[tuple[str, str], proxy.SpecSource] = {}
    logins: dict[str, SecretInput] = {}
    for item in registrations:
        try:
            registration = ServiceRegistrationSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue  # the plan refuses it and says why
        registration_name = item["metadata"]["name"]
        for index, api in enumerate(registration.apis):
            specs[(registration_name, api.id)] = await read_spec(
                k8s, namespace, api, index, hosts, list(spec.proxy.spec_url_allow_list)
            )
        for login in proxy.registration_logins(registration_name, registration):
            logins[login.secret] = await login_secret(k8s, namespace, login, spine)

    async def token(secret_name: str, component: str) -> SecretInput:
        return await generated_secret(
            k8s,
            workload.build_generated_secret(
                secret_name, namespace, component, name, {"token": twin.generate_token()}
            ),
            spine,
        )

    tls = None
    if spec.proxy.tls is not None:
        found = await k8s.get("v1", "Secret", namespace, spec.proxy.tls.secret_name)
        tls = SecretInput.of(spec.proxy.tls.secret_name, found, "spec.proxy.tls.secretName")
    if spec.auth is not None:
        deployed = await k8s.get("v1", "ConfigMap", namespace, labels.PROXY_CONFIG_NAME)
        await CONTEXT.keys.prime(namespace, proxy.deployed_keys(deployed))
    twin_tokens = await k8s.get("v1", "Secret", namespace, labels.TWIN_TOKENS_SECRET)
    existing_proxy = await k8s.get("apps/v1", "Deployment", namespace, labels.PROXY_NAME)
    existing_catalog = await k8s.get("apps/v1", "Deployment", namespace, labels.CATALOG_NAME)
    return proxy.ProxyPlanInputs(
        spine,
        registrations,
        env,
        specs,
        services,
        CONTEXT.keys.inputs(namespace),
        await token(labels.PROXY_TOKEN_SECRET, proxy.PROXY_COMPONENT),
        await token(labels.CATALOG_TOKEN_SECRET, proxy.CATALOG_COMPONENT),
        SecretInput.of(labels.TWIN_TOKENS_SECRET, twin_tokens),
        await login_secret(k8s, namespace, proxy.catalog_login(), spine),
        logins,
        tls,
        existing_proxy,
        deployment_ready(existing_proxy)[0],
        existing_catalog,
        deployment_ready(existing_catalog)[0],
        flows=await k8s.list(API_VERSION, FLOW.kind, namespace),
    )

"""The only place that spells label keys, annotation keys and the names of child objects.

Children get deterministic names so a reconcile is idempotent and a person can find them with
`kubectl get sts spine-broker`; their labels say who made them and which part they are.
"""

from __future__ import annotations

PREFIX = "spine.iiot.dev"
FIELD_MANAGER = "spine-operator"
FINALIZER = f"{PREFIX}/finalizer"

# Pod template annotation: a digest of the config and Secrets that need a restart to apply.
CONFIG_CHECKSUM = f"{PREFIX}/config-checksum"
# On generated Secrets: the operator created it and owns its content.
GENERATED = f"{PREFIX}/generated"

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"

BROKER_NAME = "spine-broker"
BROKER_HEADLESS_NAME = "spine-broker-headless"
BROKER_CONFIG_NAME = "spine-broker-config"
BROKER_ADMIN_SECRET = "spine-broker-admin"
BROKER_DATA_VOLUME = "data"

TWIN_NAME = "spine-twin"
TWIN_CONFIG_NAME = "spine-twin-config"
TWIN_TOKENS_SECRET = "spine-twin-tokens"
TWIN_CONFIG_FILE = "twin.json"

FLOW_ENGINE_NAME = "spine-flow-engine"
# The headless Service that names each engine replica: spine-flow-engine-<n>.<this>.<ns>.svc
FLOW_ENGINE_PODS_NAME = "spine-flow-engine-pods"
FLOW_ENGINE_CONFIG_NAME = "spine-flow-engine-config"
FLOW_ENGINE_TOKEN_SECRET = "spine-flow-engine-token"
FLOW_ENGINE_CONFIG_FILE = "flows.json"

PROXY_NAME = "spine-proxy"
PROXY_ADMIN_SERVICE = "spine-proxy-admin"  # the supervisor's /status, never exposed
PROXY_CONFIG_NAME = "spine-proxy-config"
PROXY_CONFIG_FILE = "proxy.json"
PROXY_TOKEN_SECRET = "spine-proxy-token"
CATALOG_NAME = "spine-catalog"
CATALOG_CONFIG_NAME = "spine-catalog-config"
CATALOG_CONFIG_FILE = "catalog.json"
CATALOG_TOKEN_SECRET = "spine-catalog-token"

GATEWAY_PREFIX = "spine-gateway-"
GATEWAY_CONFIG_FILE = "gateway.json"
GATEWAY_BUFFER_VOLUME = "buffer"
# The StatefulSet controller labels each pod with `controller-revision-hash: <sts>-<hash>`, a
# label value (at most 63 characters), which leaves 52 for the StatefulSet's name: 38 after
# the prefix.
GATEWAY_NAME_MAX_LENGTH = 52 - len(GATEWAY_PREFIX)


def broker_pvc_name(ordinal: int = 0) -> str:
    """The PVC the StatefulSet's volumeClaimTemplate creates for pod `ordinal`."""
    return f"{BROKER_DATA_VOLUME}-{BROKER_NAME}-{ordinal}"


def gateway_name(gateway: str) -> str:
    """The StatefulSet and (headless) Service of a Gateway: `spine-gateway-<name>`."""
    return f"{GATEWAY_PREFIX}{gateway}"


def gateway_config_name(gateway: str) -> str:
    return f"{GATEWAY_PREFIX}{gateway}-config"


def gateway_admin_secret_name(gateway: str) -> str:
    """The generated token the operator pushes the gateway's config with."""
    return f"{GATEWAY_PREFIX}{gateway}-admin"


def gateway_pvc_name(gateway: str, ordinal: int = 0) -> str:
    """The buffer PVC the StatefulSet's volumeClaimTemplate creates for pod `ordinal`."""
    return f"{GATEWAY_BUFFER_VOLUME}-{gateway_name(gateway)}-{ordinal}"


def login_secret_name(workload: str) -> str:
    """The Secret holding a workload's broker login (see `brokeraccess`)."""
    return f"spine-mqtt-{workload}"


def registration_login_secret_name(registration: str, api: str) -> str:
    """The Secret with an MQTT API's broker login: `<registration>-<api>-mqtt`."""
    return f"{registration}-{api}-mqtt"


def registration_route_name(registration: str, api: str) -> str:
    """An HTTP API's route on the proxy (its HAProxy backend): `<registration>-<api>`."""
    return f"{registration}-{api}"


def flow_route_name(flow: str) -> str:
    """A Flow's http source's route on the proxy: `<flow>.flow`. A registration's route name
    ends in `-<api id>` and an API id has no '.', so the two never meet."""
    return f"{flow}.flow"


def labels(component: str, instance: str, name: str = "spine") -> dict[str, str]:
    """Labels of every child: what it is, which resource it belongs to, who manages it."""
    return {
        NAME: name,
        INSTANCE: instance,
        COMPONENT: component,
        PART_OF: "spine",
        MANAGED_BY: "spine-operator",
    }


def selector(component: str, instance: str, name: str = "spine") -> dict[str, str]:
    """The immutable subset of `labels` that Services and StatefulSets select on."""
    return {NAME: name, INSTANCE: instance, COMPONENT: component}

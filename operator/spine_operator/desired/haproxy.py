"""What the namespace's proxy (HAProxy) is told: routes, the OIDC checks, the verification keys.

`plan_proxy` (desired/proxy.py) fills a `ProxyInputs` from the Spine's `auth` and `proxy`
settings, the ServiceRegistrations and the keys the operator fetched; `render_haproxy_config`
turns it into haproxy.cfg through templates/haproxy.cfg.j2. Every value that reaches the file is
checked by these models first (names, paths, roles, issuer, audiences): nothing a user writes can
add a line, a quote or a comment to the config. The supervisor (spine_runtime.proxy) receives the
rendered text and the key files and reloads HAProxy.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from spine_operator.desired.common import CONFIG_TEMPLATES
from spine_runtime.config.base import PATTERN_HINTS, CamelModel, Port
from spine_runtime.config.flow import RateLimitSpec
from spine_runtime.config.proxy import ROUTE_BACKEND_PREFIX, Role

# A key id from a JWKS: kept to characters that need no quoting in an HAProxy ACL.
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# A claim path into the token's payload, as `realm_access.roles` or `scope`.
CLAIM_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){0,4}$"
# The issuer and audiences are compared literally: printable, no space, quote, `#` or backslash.
TOKEN_STRING_PATTERN = r"^[!$-&(-\[\]-~]{1,512}$"
# A route's path prefix: `/` then path characters; no `..`, no trailing `/` (except `/` itself).
ROUTE_PATH_PATTERN = r"^(/|(/[A-Za-z0-9._~-]+)+)$"
ROUTE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
HOST_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
# A file or directory haproxy.cfg names: absolute, no spaces, quotes, `$` or `#`.
FILE_PATH_PATTERN = r"^(/[A-Za-z0-9._-]+)+/?$"
# An address to listen on: IPv4, IPv6 (letters, digits and ':') or a host name.
BIND_ADDRESS_PATTERN = (
    r"^([0-9.]{7,15}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)$"
)

PATTERN_HINTS.update(
    {
        KEY_ID_PATTERN: "must be a key id of up to 128 letters, digits, '.', '_' and '-'",
        CLAIM_PATH_PATTERN: "must be a claim path such as realm_access.roles or scope",
        TOKEN_STRING_PATTERN: "must be printable, without spaces, quotes, '#' or backslashes",
        ROUTE_PATH_PATTERN: "must be a URL path such as /services/maintenance/v1: '/' then "
        "letters, digits, '.', '_', '~' and '-', without a trailing '/'",
        ROUTE_NAME_PATTERN: "must be lowercase letters, digits, '-' and '.'",
        HOST_PATTERN: "must be a host name or an IPv4 address",
        FILE_PATH_PATTERN: "must be an absolute path of letters, digits, '.', '_', '-' and '/'",
        BIND_ADDRESS_PATTERN: "must be an IPv4 or IPv6 address or a host name",
    }
)

KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]
ClaimPath = Annotated[str, StringConstraints(pattern=CLAIM_PATH_PATTERN)]
TokenString = Annotated[str, StringConstraints(pattern=TOKEN_STRING_PATTERN)]
RoutePath = Annotated[str, StringConstraints(pattern=ROUTE_PATH_PATTERN, max_length=200)]
RouteName = Annotated[str, StringConstraints(pattern=ROUTE_NAME_PATTERN, max_length=120)]
Host = Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=253)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
FilePath = Annotated[str, StringConstraints(pattern=FILE_PATH_PATTERN, max_length=512)]
BindAddress = Annotated[str, StringConstraints(pattern=BIND_ADDRESS_PATTERN, max_length=253)]
Algorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Headers the proxy sets from the verified token (and strips from every client request).
SUBJECT_HEADER = "X-Spine-Subject"
ROLES_HEADER = "X-Spine-Roles"  # the route's roles the token holds, space-separated


class VerifyKey(CamelModel):
    """One public key from the issuer's JWKS, pinned to one algorithm."""

    kid: KeyId
    alg: Algorithm
    pem: str = Field(max_length=16384, description="SPKI PEM (BEGIN PUBLIC KEY).")

    def file_name(self) -> str:
        """Content-addressed, so a rotated key never overwrites one a running worker uses."""
        return hashlib.sha256(self.pem.encode()).hexdigest()[:32] + ".pem"


class ProxyAuth(CamelModel):
    """The OIDC checks every protected route makes after the signature."""

    issuer: TokenString
    audiences: list[TokenString] = Field(min_length=1, max_length=8)
    roles_claim: ClaimPath = "realm_access.roles"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Empty while the JWKS has never been fetched: every protected route answers 503.
    keys: list[VerifyKey] = Field(default_factory=list, max_length=32)


class RateLimit(CamelModel):
    requests: int = Field(ge=1, le=1_000_000)
    per_seconds: int = Field(ge=1, le=3600)

    @classmethod
    def of(cls, spec: RateLimitSpec | None) -> RateLimit | None:
        """The proxy's limit for what a user wrote (a registration's or a flow's route)."""
        return cls(requests=spec.requests, per_seconds=spec.per_seconds) if spec else None


class ProxyBackend(CamelModel):
    host: Host
    port: Port
    tls: bool = False
    # The path the route's prefix is replaced with on the way to the backend ("" keeps none).
    path_prefix: Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9._~-]+)*$")] = ""


class ProxyRoute(CamelModel):
    """One route: a path prefix (and methods) to a backend, fail-closed unless `public`."""

    name: RouteName = Field(description="Unique per proxy; names the HAProxy backend.")
    path: RoutePath
    methods: list[Method] | None = Field(default=None, description="All methods if unset.")
    backend: ProxyBackend
    # Any one of them admits; empty (and not public) admits any valid token.
    roles: list[Role] = Field(default_factory=list, max_length=32)
    public: bool = False
    rate_limit: RateLimit | None = None
    # Sends `Authorization: Bearer ${ENV}` to the backend (HAProxy expands the environment
    # variable at start), so a workload token never appears in haproxy.cfg or a ConfigMap.
    backend_token_env: EnvName | None = None


class ProxyInputs(CamelModel):
    """Everything haproxy.cfg depends on; the environment supplies addresses and paths."""

    bind_address: BindAddress = "0.0.0.0"
    port: Port = 8443
    tls_cert_file: FilePath | None = Field(default=None, description="PEM with key and chain.")
    keys_dir: FilePath = Field(description="Where the supervisor writes the key files.")
    exporter_port: Port = Field(default=8405, description="HAProxy's Prometheus exporter.")
    exporter_address: BindAddress = "127.0.0.1"
    auth: ProxyAuth | None = None
    routes: list[ProxyRoute] = Field(default_factory=list, max_length=500)


# How many elements of an array claim (`aud`, the roles claim) the proxy looks at: HAProxy 2.6
# reads JSON arrays only by index. A role or audience at a later index is not seen, so the token
# is refused (fail-closed), never admitted.
AUDIENCE_SLOTS = 8
ROLE_SLOTS = 16
# The `sub` the proxy forwards: printable ASCII without spaces, so no header can be split.
SUBJECT_REGEX = "^[!-~]{1,255}$"


@dataclass(frozen=True)
class _RouteView:
    """One route as the template needs it: names, matches and regexes built from checked values."""

    route: ProxyRoute
    backend_name: str
    prefix_regex: str  # the route's path as a regex, `.` as `[.]` (no backslash in the file)
    role_checks: list[tuple[str, str, list[str]]]  # (role, match flag, patterns)
    resolve: bool  # a host name, resolved by HAProxy at run time (not an IP address)


def _literal_regex(text: str) -> str:
    """A regex that matches `text` exactly; the patterns allow only `.` as a regex metachar."""
    return text.replace(".", "[.]")


def _role_checks(auth: ProxyAuth, roles: list[Role]) -> list[tuple[str, str, list[str]]]:
    """For each role, the JSON paths (or regex) that find it in the verified payload."""
    claim = "$." + auth.roles_claim
    checks = []
    for role in roles:
        if auth.roles_claim.split(".")[-1] == "scope":
            # OAuth scopes: one string of space-separated words; a whole word must match.
            checks.append((role, "reg", [claim, f"(^| ){_literal_regex(role)}( |$)"]))
        else:
            paths = [claim] + [f"{claim}[{index}]" for index in range(ROLE_SLOTS)]
            checks.append((role, "str", paths))
    return checks


def render_haproxy_config(inputs: ProxyInputs) -> str:
    """haproxy.cfg for these inputs (templates/haproxy.cfg.j2).

    Routes are tried longest path first, so `/a/b` wins over `/a`. Raises ValueError for two
    routes with one name (they would share an HAProxy backend).
    """
    names = [route.name for route in inputs.routes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"routes: the route name {duplicates[0]!r} is used more than once")
    auth = inputs.auth
    ordered = sorted(inputs.routes, key=lambda route: len(route.path), reverse=True)
    views = [
        _RouteView(
            route=route,
            backend_name=ROUTE_BACKEND_PREFIX + route.name,
            prefix_regex=_literal_regex(route.path),
            role_checks=[] if auth is None or route.public else _role_checks(auth, route.roles),
            resolve=not _is_ip_address(route.backend.host),
        )
        for route in ordered
    ]
    keys: list[tuple[VerifyKey, str]] = []
    seen: set[tuple[str, str, str]] = set()
    if auth is not None:
        for key in auth.keys:
            path = f"{inputs.keys_dir.rstrip('/')}/{key.file_name()}"
            if (key.kid, key.alg, path) not in seen:
                seen.add((key.kid, key.alg, path))
                keys.append((key, path))
    text = CONFIG_TEMPLATES.get_template("haproxy.cfg.j2").render(
        inputs=inputs,
        auth=auth,
        keys=keys,
        routes=views,
        resolve_hosts=any(view.resolve for view in views),
        public_routes=[view.route.name for view in views if view.route.public],
        bind=_address(inputs.bind_address, inputs.port),
        exporter_bind=_address(inputs.exporter_address, inputs.exporter_port),
        audience_paths=["$.aud"] + [f"$.aud[{index}]" for index in range(AUDIENCE_SLOTS)],
        subject_header=SUBJECT_HEADER,
        roles_header=ROLES_HEADER,
        subject_regex=SUBJECT_REGEX,
    )
    for line in text.splitlines():
        if "\x00" in line or "\r" in line:
            raise ValueError("a control character reached haproxy.cfg")
    return text


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

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
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from spine_runtime.config.base import PATTERN_HINTS, CamelModel, Port

# A key id from a JWKS: kept to characters that need no quoting in an HAProxy ACL.
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# A role (a Keycloak realm role, an OAuth scope): letters, digits and `:._/-`; no space, quote,
# `#`, backslash or control character, so it can sit in an ACL value and in a regex once escaped.
ROLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._/-]{0,99}$"
# A claim path into the token's payload, as `realm_access.roles` or `scope`.
CLAIM_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){0,4}$"
# The issuer and audiences are compared literally: printable, no space, quote, `#` or backslash.
TOKEN_STRING_PATTERN = r"^[!$-&(-\[\]-~]{1,512}$"
# A route's path prefix: `/` then path characters; no `..`, no trailing `/` (except `/` itself).
ROUTE_PATH_PATTERN = r"^(/|(/[A-Za-z0-9._~-]+)+)$"
ROUTE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
HOST_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"

PATTERN_HINTS.update(
    {
        KEY_ID_PATTERN: "must be a key id of up to 128 letters, digits, '.', '_' and '-'",
        ROLE_PATTERN: "must be a role of up to 100 letters, digits, ':', '.', '_', '/' and '-', "
        "starting with a letter or digit (no spaces, quotes or '#')",
        CLAIM_PATH_PATTERN: "must be a claim path such as realm_access.roles or scope",
        TOKEN_STRING_PATTERN: "must be printable, without spaces, quotes, '#' or backslashes",
        ROUTE_PATH_PATTERN: "must be a URL path such as /services/maintenance/v1: '/' then "
        "letters, digits, '.', '_', '~' and '-', without a trailing '/'",
        ROUTE_NAME_PATTERN: "must be lowercase letters, digits, '-' and '.'",
        HOST_PATTERN: "must be a host name or an IPv4 address",
    }
)

KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]
Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
ClaimPath = Annotated[str, StringConstraints(pattern=CLAIM_PATH_PATTERN)]
TokenString = Annotated[str, StringConstraints(pattern=TOKEN_STRING_PATTERN)]
RoutePath = Annotated[str, StringConstraints(pattern=ROUTE_PATH_PATTERN, max_length=200)]
RouteName = Annotated[str, StringConstraints(pattern=ROUTE_NAME_PATTERN, max_length=120)]
Host = Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=253)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
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

    bind_address: str = "0.0.0.0"
    port: Port = 8443
    tls_cert_file: str | None = Field(default=None, description="PEM with key and chain.")
    keys_dir: str = Field(description="Where the supervisor writes the key files.")
    exporter_port: Port = Field(default=8405, description="HAProxy's Prometheus exporter.")
    exporter_address: str = "127.0.0.1"
    auth: ProxyAuth | None = None
    routes: list[ProxyRoute] = Field(default_factory=list, max_length=500)


def render_haproxy_config(inputs: ProxyInputs) -> str:
    """haproxy.cfg for these inputs (templates/haproxy.cfg.j2)."""
    raise NotImplementedError("the proxy branch renders it")

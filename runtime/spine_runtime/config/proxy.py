"""The proxy supervisor's config: the haproxy.cfg the operator rendered and the key files.

The operator renders haproxy.cfg (spine_operator.desired.haproxy) and pushes this document to the
supervisor (spine_runtime.proxy) like every runtime's config; the supervisor writes the key files
(content-addressed, never overwritten), checks the config with `haproxy -c`, writes it and
reloads HAProxy through its master socket. A config HAProxy refuses leaves the running one
serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints

from spine_runtime.config.base import PATTERN_HINTS, CamelModel, HttpSettings, SafeLine

# A role (a Keycloak realm role, an OAuth scope): letters, digits and `:._/-`; no space, quote,
# `#`, backslash or control character, so it can sit in an HAProxy ACL value and in a regex once
# escaped. Here, not in the operator's haproxy.py, because a Flow's spec (the engine's type)
# names roles too (`source.http.expose.roles`).
ROLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._/-]{0,99}$"
PATTERN_HINTS[ROLE_PATTERN] = (
    "must be a role of up to 100 letters, digits, ':', '.', '_', '/' and '-', starting with a "
    "letter or digit (no spaces, quotes or '#')"
)
Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
# A key file written into the keys directory: `<sha256 prefix>.pem`, as VerifyKey.file_name().
KEY_FILE_PATTERN = r"^[0-9a-f]{32}\.pem$"
KeyFileName = Annotated[str, StringConstraints(pattern=KEY_FILE_PATTERN)]
# haproxy.cfg names each route's backend `route-<route name>` and its one server `<route name>`;
# the supervisor finds a route's health in HAProxy's stats by these names.
ROUTE_BACKEND_PREFIX = "route-"


class HaproxyProcess(CamelModel):
    """How the supervisor runs HAProxy (master-worker) and where it writes its files."""

    binary: Path = Path("haproxy")
    config_file: Path = Field(description="Where haproxy.cfg is written (a writable volume).")
    keys_dir: Path = Field(description="Where key files are written; haproxy.cfg names them.")
    master_socket: Path = Field(description="HAProxy's master CLI socket, for reloads and stats.")
    exporter_url: SafeLine = Field(
        default="http://127.0.0.1:8405/metrics",
        description="HAProxy's Prometheus exporter, which /metrics appends to the supervisor's.",
    )


class RouteInfo(CamelModel):
    """A route as /status reports it: its HAProxy backend and the resource it came from."""

    name: SafeLine = Field(description="The HAProxy backend's name (ProxyRoute.name).")
    path: SafeLine
    owner: SafeLine | None = Field(
        default=None, description="`ServiceRegistration/<name>` or `Spine/<name>`."
    )


class KeyInfo(CamelModel):
    """Which key a key file holds: the operator reads it back from the running proxy's config
    after a restart, so the proxy keeps its keys until the issuer answers again."""

    kid: SafeLine
    alg: SafeLine
    file: KeyFileName


class ProxyConfig(CamelModel):
    http: HttpSettings = Field(default_factory=HttpSettings)
    haproxy: HaproxyProcess
    haproxy_cfg: str = Field(max_length=2_000_000, description="The rendered haproxy.cfg.")
    key_files: dict[KeyFileName, str] = Field(
        default_factory=dict, max_length=64, description="Public keys (SPKI PEM) by file name."
    )
    keys: list[KeyInfo] = Field(default_factory=list, max_length=64)
    routes: list[RouteInfo] = Field(default_factory=list, max_length=500)

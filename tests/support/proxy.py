"""The proxy under test: signing keys and tokens, an echo backend, and the supervisor with HAProxy.

`TokenIssuer` signs tokens with joserfc (RS256 and ES256 keys, and hand-crafted malicious ones);
`EchoBackend` is a threaded HTTP server on a free port that answers with the path and headers it
received; `LocalProxy` renders haproxy.cfg with the operator's renderer, starts
`spine-runtime proxy` (which starts the real Debian HAProxy) and pushes new configs to it.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from spine_operator.desired.haproxy import ProxyInputs, VerifyKey, render_haproxy_config
from spine_runtime.config.proxy import ProxyConfig
from tests.support.processes import ManagedProcess, free_port, wait_until

HAPROXY = "/usr/sbin/haproxy"
ISSUER = "https://sso.example/realms/plant-a"
AUDIENCE = "spine"


def b64url(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenIssuer:
    """Keys by kid, and tokens with the claims a test chooses (good ones by default)."""

    def __init__(self) -> None:
        self.keys: dict[str, RSAKey | ECKey] = {}
        self.algs: dict[str, str] = {}

    def add_rsa(self, kid: str) -> TokenIssuer:
        self.keys[kid], self.algs[kid] = RSAKey.generate_key(2048), "RS256"
        return self

    def add_ec(self, kid: str) -> TokenIssuer:
        self.keys[kid], self.algs[kid] = ECKey.generate_key("P-256"), "ES256"
        return self

    def public_pem(self, kid: str) -> str:
        return self.keys[kid].as_pem(private=False).decode()

    def verify_keys(self, *kids: str) -> list[VerifyKey]:
        chosen = kids or tuple(self.keys)
        return [VerifyKey(kid=kid, alg=self.algs[kid], pem=self.public_pem(kid)) for kid in chosen]  # type: ignore[arg-type]

    def claims(self, subject: str = "alice", roles: list[str] | None = None, **extra: Any) -> dict:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": roles if roles is not None else ["spine:read"]},
        }
        claims.update(extra)
        return {key: value for key, value in claims.items() if value is not None}

    def token(
        self,
        kid: str = "rsa-1",
        claims: dict[str, Any] | None = None,
        alg: str | None = None,
        header: dict[str, Any] | None = None,
        **claim_overrides: Any,
    ) -> str:
        key = self.keys[kid]
        payload = claims if claims is not None else self.claims(**claim_overrides)
        headers = {"alg": alg or self.algs[kid], "kid": kid, "typ": "JWT", **(header or {})}
        return jwt.encode(headers, payload, key, algorithms=[headers["alg"]])

    @staticmethod
    def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
        """A token assembled by hand, e.g. alg:none, with whatever signature part is given."""
        return f"{b64url(header)}.{b64url(claims)}.{signature}"


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay_paths: dict[str, float] = {}
    delayed: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        delay = next((s for p, s in self.delay_paths.items() if self.path.startswith(p)), 0.0)
        if delay:
            self.delayed.append(self.path)  # a test can wait until its request is here
            time.sleep(delay)
        body = json.dumps(
            {
                "path": self.path,
                "method": self.command,
                "headers": [[k, v] for k, v in self.headers.items()],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy's health checks connect and close: not an error worth a traceback


class EchoBackend:
    """Answers every request with {"path", "method", "headers"}; `slow(prefix, s)` delays some."""

    def __init__(self) -> None:
        handler = type("Handler", (_EchoHandler,), {"delay_paths": {}, "delayed": []})
        self.handler = handler
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def slow(self, prefix: str, seconds: float) -> None:
        self.handler.delay_paths[prefix] = seconds

    def __enter__(self) -> EchoBackend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: Any

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def echoed(self, name: str) -> list[str]:
        """Values of a header as the backend received it (case-insensitive name)."""
        assert isinstance(self.body, dict) and "headers" in self.body, self.body
        return [v for k, v in self.body["headers"] if k.lower() == name.lower()]


class LocalProxy:
    """`spine-runtime proxy` with HAProxy master-worker, on free ports in `state_dir`."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.port, self.exporter_port, self.admin_port = free_port(), free_port(), free_port()
        self.keys_dir = state_dir / "keys"
        self.token = secrets.token_urlsafe(16)
        (state_dir / "admin-token").write_text(self.token)
        self.config_path = state_dir / "proxy.json"
        self.env = env or {}
        self.process: ManagedProcess | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def inputs(self, **fields: Any) -> ProxyInputs:
        """ProxyInputs on this proxy's ports and keys directory."""
        return ProxyInputs(
            bind_address="127.0.0.1",
            port=self.port,
            keys_dir=str(self.keys_dir),
            exporter_port=self.exporter_port,
            **fields,
        )

    def document(self, inputs: ProxyInputs, haproxy_cfg: str | None = None) -> dict[str, Any]:
        keys = inputs.auth.keys if inputs.auth else []
        config = ProxyConfig.model_validate(
            {
                "http": {
                    "host": "127.0.0.1",
                    "port": self.admin_port,
                    "adminTokenFile": str(self.state_dir / "admin-token"),
                },
                "haproxy": {
                    "binary": HAPROXY,
                    "configFile": str(self.state_dir / "haproxy.cfg"),
                    "keysDir": str(self.keys_dir),
                    "masterSocket": str(self.state_dir / "master.sock"),
                    "exporterUrl": f"http://127.0.0.1:{self.exporter_port}/metrics",
                },
                "haproxyCfg": haproxy_cfg
                if haproxy_cfg is not None
                else render_haproxy_config(inputs),
                "keyFiles": {key.file_name(): key.pem for key in keys},
                "routes": [
                    {"name": r.name, "path": r.path, "owner": f"ServiceRegistration/{r.name}"}
                    for r in inputs.routes
                ],
            }
        )
        return config.to_wire()

    def start(self, inputs: ProxyInputs, haproxy_cfg: str | None = None) -> LocalProxy:
        """Start and wait until ready; with a `haproxy_cfg` HAProxy refuses, only until the
        admin endpoint answers."""
        self.config_path.write_text(json.dumps(self.document(inputs, haproxy_cfg)))
        argv = [
            sys.executable,
            "-m",
            "spine_runtime.cli",
            "proxy",
            "--config",
            str(self.config_path),
        ]
        self.process = ManagedProcess(argv, self.state_dir / "proxy.log", env=self.env).start()
        self.process.wait_for_port(self.admin_port)
        if haproxy_cfg is not None:
            return self
        self.process.wait_for_port(self.port)
        wait_until(lambda: self.status()["ready"], 10, "the proxy to report ready")
        return self

    def stop(self) -> None:
        self.client.close()
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        return httpx.request(method, url, timeout=30, **kwargs)

    def status(self) -> dict[str, Any]:
        return self.admin("GET", "/status").json()

    def push(
        self, inputs: ProxyInputs | None = None, document: dict | None = None
    ) -> httpx.Response:
        body = document if document is not None else self.document(inputs)  # type: ignore[arg-type]
        return self.admin(
            "PUT", "/admin/config", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )

    def get(
        self, path: str, token: str | None = None, method: str = "GET", **headers: str
    ) -> Answer:
        if token is not None:
            headers = {"Authorization": f"Bearer {token}", **headers}
        response = self.client.request(method, path, headers=headers)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return Answer(response.status_code, response.headers, body)


def started(proxy: LocalProxy, inputs: ProxyInputs) -> Iterator[LocalProxy]:
    """For fixtures: start, yield, and stop even when the test fails."""
    try:
        yield proxy.start(inputs)
    finally:
        proxy.stop()

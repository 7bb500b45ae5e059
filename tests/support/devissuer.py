"""Run the real development OIDC issuer (`spine-runtime dev-issuer`) for a test, stopped by PID.

`DevIssuer(tmp_path).start()` serves discovery and JWKS on a free 127.0.0.1 port; `token()`
signs with its newest key (`mint_token`), `rotate()` adds a key the way a test of key rotation
needs (through the CLI, as another process would). Used by the key-handling tests and the
proxy's tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spine_runtime.devissuer import mint_token
from tests.support.processes import ManagedProcess, free_port


class DevIssuer:
    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.process = ManagedProcess(
            [
                sys.executable,
                "-m",
                "spine_runtime.cli",
                "dev-issuer",
                "--state-dir",
                str(state_dir),
                "--port",
                str(self.port),
            ],
            state_dir / "dev-issuer.log",
        )

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks.json"

    def start(self) -> DevIssuer:
        self.process.start().wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self.process.stop()

    def rotate(self) -> str:
        """Add a signing key (the old ones stay published); returns the new kid."""
        result = subprocess.run(
            [*self.process.argv[:4], "--state-dir", str(self.state_dir), "--rotate"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()

    def token(
        self,
        subject: str = "alice",
        roles: list[str] | None = None,
        audience: str = "spine",
        lifetime: int = 3600,
        roles_claim: str = "realm_access.roles",
    ) -> str:
        return mint_token(
            self.state_dir,
            subject,
            roles or [],
            audience,
            self.issuer,
            lifetime=lifetime,
            roles_claim=roles_claim,
        )

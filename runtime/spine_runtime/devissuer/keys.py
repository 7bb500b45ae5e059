"""The development issuer's RSA keys in <state dir>/dev-issuer/, its JWKS and its tokens.

DEVELOPMENT ONLY. The newest key signs; every key stays published until its file is removed,
so a test can rotate (`rotate_key`, or `spine-runtime dev-issuer --rotate`) and still verify
tokens signed before. The server reads the directory on each request: a rotation by another
process is served at once. Private keys are files of mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

KEY_DIR_NAME = "dev-issuer"
KEY_BITS = 2048
ALGORITHM = "RS256"


def key_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / KEY_DIR_NAME


def _key_files(state_dir: Path | str) -> list[Path]:
    # key-<ns since the epoch>.json: the names sort by age.
    return sorted(key_dir(state_dir).glob("key-*.json"))


def _write_private(path: Path, text: str) -> None:
    """Created 0600 under a name the readers skip, then renamed: a server reading the
    directory at that moment never sees half a key."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.rename(path)


def rotate_key(state_dir: Path | str) -> str:
    """Add a new signing key (the old ones stay published); returns its kid."""
    directory = key_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    key = RSAKey.generate_key(KEY_BITS, private=True)
    kid = key.thumbprint()
    document = {**key.as_dict(private=True), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    _write_private(directory / f"key-{time.time_ns():020d}.json", json.dumps(document))
    return kid


def signing_keys(state_dir: Path | str) -> list[RSAKey]:
    """Every key, oldest first; one is made if there is none yet."""
    files = _key_files(state_dir)
    if not files:
        rotate_key(state_dir)
        files = _key_files(state_dir)
    keys = []
    for file in files:
        data = json.loads(file.read_text())
        keys.append(RSAKey.import_key(data, {"kid": data["kid"], "alg": ALGORITHM, "use": "sig"}))
    return keys


def public_jwks(state_dir: Path | str) -> dict[str, Any]:
    return {
        "keys": [
            {**key.as_dict(private=False), "kid": key.kid, "alg": ALGORITHM, "use": "sig"}
            for key in signing_keys(state_dir)
        ]
    }


def _claims_with_roles(roles: list[str], roles_claim: str) -> dict[str, Any]:
    """`realm_access.roles` -> {"realm_access": {"roles": [...]}}; `scope` -> "a b"."""
    parts = roles_claim.split(".")
    value: Any = " ".join(roles) if parts == ["scope"] else list(roles)
    for part in reversed(parts):
        value = {part: value}
    return value


def mint_token(
    state_dir: Path | str,
    subject: str,
    roles: list[str],
    audience: str,
    issuer: str,
    lifetime: int = 3600,
    roles_claim: str = "realm_access.roles",
) -> str:
    """A signed RS256 access token from the newest key (development only)."""
    key = signing_keys(state_dir)[-1]
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        **_claims_with_roles(list(roles), roles_claim),
    }
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, claims, key)

"""The development issuer's tokens: the claims the proxy checks, signed by the newest key."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import KeySet

from spine_runtime.devissuer import mint_token, rotate_key
from spine_runtime.devissuer.keys import public_jwks

ISSUER = "http://127.0.0.1:9999"


def decode(token: str, state_dir: Path) -> jwt.Token:
    return jwt.decode(token, KeySet.import_key_set(public_jwks(state_dir)), algorithms=["RS256"])


def test_a_token_carries_issuer_audience_lifetime_and_keycloak_roles(tmp_path: Path) -> None:
    token = mint_token(tmp_path, "alice", ["maintenance:read"], "spine", ISSUER, lifetime=600)
    decoded = decode(token, tmp_path)
    claims = decoded.claims
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["kid"] == public_jwks(tmp_path)["keys"][-1]["kid"]
    assert (claims["iss"], claims["sub"], claims["aud"]) == (ISSUER, "alice", "spine")
    assert claims["realm_access"] == {"roles": ["maintenance:read"]}
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 5


def test_scope_roles_are_one_space_separated_string(tmp_path: Path) -> None:
    token = mint_token(
        tmp_path, "bob", ["orders:read", "orders:write"], "spine", ISSUER, roles_claim="scope"
    )
    assert decode(token, tmp_path).claims["scope"] == "orders:read orders:write"


def test_after_a_rotation_the_new_key_signs_and_the_old_one_stays_published(
    tmp_path: Path,
) -> None:
    old_token = mint_token(tmp_path, "alice", [], "spine", ISSUER)
    new_kid = rotate_key(tmp_path)
    new_token = mint_token(tmp_path, "alice", [], "spine", ISSUER)
    assert decode(new_token, tmp_path).header["kid"] == new_kid
    assert decode(old_token, tmp_path).claims["sub"] == "alice"  # still verifiable
    assert len(public_jwks(tmp_path)["keys"]) == 2


def test_the_cli_prints_a_token_a_user_can_paste(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spine_runtime.cli",
            "dev-issuer",
            "--state-dir",
            str(tmp_path),
            "--mint",
            "carol",
            "--role",
            "twin:write",
            "--audience",
            "spine",
            "--issuer",
            ISSUER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    claims = decode(result.stdout.strip(), tmp_path).claims
    assert claims["sub"] == "carol" and claims["realm_access"]["roles"] == ["twin:write"]

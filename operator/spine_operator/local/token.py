"""`spine token`: an access token from the development issuer of a running `spine up`.

Reads `processes.json` in the state directory for the issuer's URL and key directory and the
Spine's audience and roles claim, and signs with the issuer's newest key, so the token is one
the local proxy admits (when its roles fit the route). Development only.
"""

from __future__ import annotations

from pathlib import Path

from spine_operator.local.statefile import FILE_NAME, read_state
from spine_runtime.devissuer.keys import mint_token

MAX_LIFETIME_SECONDS = 86_400


class TokenError(RuntimeError):
    """No running `spine up` with `auth` to sign for; the message says what to do."""


def local_token(
    state_dir: Path, namespace: str | None, user: str, roles: list[str], lifetime: int
) -> str:
    if not 1 <= lifetime <= MAX_LIFETIME_SECONDS:
        raise TokenError(f"--lifetime must be between 1 and {MAX_LIFETIME_SECONDS} seconds")
    state = read_state(state_dir / FILE_NAME)
    if state is None:
        raise TokenError(
            f"no spine up is running with --state-dir {state_dir} "
            f"({state_dir / FILE_NAME} is missing)"
        )
    with_auth = {
        name: document["proxy"]
        for name, document in (state.get("namespaces") or {}).items()
        if (document.get("proxy") or {}).get("issuer")
    }
    if not with_auth:
        raise TokenError("no Spine of this spine up sets auth: there is no issuer to sign for")
    if namespace is None:
        if len(with_auth) > 1:
            raise TokenError(f"choose a namespace with --namespace: {', '.join(sorted(with_auth))}")
        namespace = next(iter(with_auth))
    if namespace not in with_auth:
        raise TokenError(
            f"namespace {namespace} has no Spine with auth here; "
            f"choose one of {', '.join(sorted(with_auth))}"
        )
    proxy = with_auth[namespace]
    return mint_token(
        proxy["issuerStateDir"],
        user,
        roles,
        proxy["audience"],
        proxy["issuer"],
        lifetime=lifetime,
        roles_claim=proxy["rolesClaim"],
    )

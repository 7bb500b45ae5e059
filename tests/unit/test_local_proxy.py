"""`spine up`'s API gateway without processes: which namespaces get it, the issuer swap, and
`spine token`'s answers; e2e/test_press_line_local.py calls the running proxy with its tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from spine_operator.local.plan import plan_local_run
from spine_operator.local.proxy import LocalIssuer, local_spine
from spine_operator.local.statefile import FILE_NAME, write_state
from spine_operator.local.token import TokenError, local_token
from spine_operator.render import Resource
from spine_runtime.devissuer.keys import public_jwks, signing_keys

AUTH = {"issuer": "https://sso.example.com/realms/plant-a", "audience": "spine"}


def resource(kind: str, name: str, namespace: str = "plant-a", **spec: object) -> Resource:
    body = {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return Resource(f"test.yaml ({kind} {name})", body)


def test_registrations_and_their_config_maps_reach_the_namespace_plan() -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "specs"}}
    plan = plan_local_run(
        [resource("Spine", "default", auth=AUTH), resource("ServiceRegistration", "maint")],
        {("plant-a", "specs"): config_map, ("elsewhere", "specs"): config_map},
    )
    [namespace] = plan.namespaces
    assert [item["metadata"]["name"] for item in namespace.registration_bodies] == ["maint"]
    assert list(namespace.config_maps) == [("plant-a", "specs")]
    assert plan.skipped == []


def test_the_local_spine_trusts_the_development_issuer_and_keeps_audience_and_roles() -> None:
    body = {
        "metadata": {"name": "default", "namespace": "plant-a"},
        "spec": {"auth": {**AUTH, "jwksUri": "https://sso.example.com/keys"}},
    }
    issuer = LocalIssuer("http://127.0.0.1:20000", 20000, Path("/nowhere"))
    auth = local_spine(body, issuer)["spec"]["auth"]
    assert auth == {"issuer": "http://127.0.0.1:20000", "audience": "spine"}
    assert body["spec"]["auth"]["issuer"] == AUTH["issuer"]  # the user's object is untouched
    assert local_spine({"spec": {}}, issuer) == {"spec": {}}


def write_run(state_dir: Path, namespaces: dict[str, object]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    write_state(state_dir / FILE_NAME, {"namespaces": namespaces})


def test_spine_token_signs_for_the_running_issuer_with_the_spines_audience(tmp_path: Path) -> None:
    issuer_dir = tmp_path / "issuer"
    signing_keys(issuer_dir)
    proxy = {
        "issuer": "http://127.0.0.1:20001",
        "issuerStateDir": str(issuer_dir),
        "audience": "spine",
        "rolesClaim": "realm_access.roles",
    }
    write_run(tmp_path / "state", {"plant-a": {"proxy": proxy}})
    token = local_token(tmp_path / "state", None, "alice", ["spine:twin:read"], 60)
    claims = jwt.decode(token, KeySet.import_key_set(public_jwks(issuer_dir))).claims
    assert claims["iss"] == "http://127.0.0.1:20001" and claims["aud"] == "spine"
    assert claims["sub"] == "alice" and claims["realm_access"] == {"roles": ["spine:twin:read"]}
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize(
    ("namespaces", "namespace", "lifetime", "expected"),
    [
        (None, None, 60, "no spine up is running"),
        ({"plant-a": {"twin": {}}}, None, 60, "no Spine of this spine up sets auth"),
        (
            {"a": {"proxy": {"issuer": "x"}}, "b": {"proxy": {"issuer": "y"}}},
            None,
            60,
            "choose a namespace with --namespace: a, b",
        ),
        ({"a": {"proxy": {"issuer": "x"}}}, "c", 60, "namespace c has no Spine with auth"),
        ({"a": {"proxy": {"issuer": "x"}}}, None, 0, "--lifetime must be between"),
    ],
)
def test_spine_token_says_why_it_cannot_sign(
    tmp_path: Path,
    namespaces: dict[str, object] | None,
    namespace: str | None,
    lifetime: int,
    expected: str,
) -> None:
    if namespaces is not None:
        write_run(tmp_path, namespaces)
    with pytest.raises(TokenError, match=expected.replace("-", r"\-")):
        local_token(tmp_path, namespace, "alice", [], lifetime)

"""haproxy.cfg from ProxyInputs: the golden file, HAProxy's own check, and no way to inject a line.

Golden file: set SPINE_UPDATE_GOLDEN=1 to rewrite it after an intended change, then review the
diff like any other code change. The behaviour of the rendered config against attacks is proven
against the real HAProxy in tests/integration/test_proxy.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from spine_operator.desired.haproxy import (
    ProxyAuth,
    ProxyBackend,
    ProxyInputs,
    ProxyRoute,
    RateLimit,
    VerifyKey,
    render_haproxy_config,
)
from spine_runtime.common.configsource import describe_validation_error

GOLDEN = Path(__file__).parent / "golden"
HAPROXY = "/usr/sbin/haproxy"
# Fixed keys so the golden file is stable (public keys only; the tests never sign with them).
RSA_PEM = (GOLDEN / "haproxy-rsa.pub.pem").read_text()
EC_PEM = (GOLDEN / "haproxy-ec.pub.pem").read_text()


def sample_inputs(keys_dir: str = "/var/run/spine-proxy/keys", **changes: object) -> ProxyInputs:
    inputs = ProxyInputs(
        keys_dir=keys_dir,
        auth=ProxyAuth(
            issuer="https://sso.example/realms/plant-a",
            audiences=["spine", "maintenance-api"],
            keys=[
                VerifyKey(kid="rsa-2026", alg="RS256", pem=RSA_PEM),
                VerifyKey(kid="ec-2026", alg="ES256", pem=EC_PEM),
            ],
        ),
        routes=[
            ProxyRoute(
                name="maintenance-orders",
                path="/services/maintenance/v1",
                backend=ProxyBackend(host="maintenance.plant-a.svc", port=8080),
                roles=["maintenance:read", "maintenance.admin"],
                rate_limit=RateLimit(requests=100, per_seconds=10),
            ),
            ProxyRoute(
                name="twin-write",
                path="/twin/api/2",
                methods=["PUT", "PATCH", "POST", "DELETE"],
                backend=ProxyBackend(host="twin.plant-a.svc", port=8080, path_prefix="/api/2"),
                roles=["spine:write"],
                backend_token_env="SPINE_TWIN_WRITE_TOKEN",
            ),
            ProxyRoute(
                name="catalog",
                path="/catalog",
                public=True,
                backend=ProxyBackend(host="catalog.plant-a.svc", port=8080),
                rate_limit=RateLimit(requests=50, per_seconds=1),
            ),
            ProxyRoute(
                name="console",
                path="/",
                backend=ProxyBackend(host="10.0.0.7", port=8443, tls=True, path_prefix="/ui"),
            ),
        ],
    )
    return inputs.model_copy(update=changes)


def test_rendered_config_matches_the_golden_file() -> None:
    rendered = render_haproxy_config(sample_inputs())
    golden = GOLDEN / "haproxy.cfg"
    if os.environ.get("SPINE_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"run with SPINE_UPDATE_GOLDEN=1 and review {golden}"


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="Debian haproxy is not installed")
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"auth": None},
        {"routes": []},
        {"bind_address": "::"},
    ],
    ids=["full", "no-auth", "no-routes", "ipv6"],
)
def test_haproxy_accepts_the_rendered_config_without_a_warning(tmp_path, changes) -> None:
    inputs = sample_inputs(keys_dir=str(tmp_path), **changes)
    for key in inputs.auth.keys if inputs.auth else []:
        (tmp_path / key.file_name()).write_text(key.pem)
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(inputs))
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    output = check.stdout + check.stderr
    assert check.returncode == 0 and "WARNING" not in output, output


def test_a_protected_route_without_keys_answers_503_and_verifies_nothing() -> None:
    config = render_haproxy_config(
        sample_inputs(auth=sample_inputs().auth.model_copy(update={"keys": []}))
    )
    assert "jwt_verify" not in config
    assert "return status 503" in config and "unless public-route" in config


def test_each_key_is_pinned_to_its_own_algorithm_and_kid() -> None:
    config = render_haproxy_config(sample_inputs())
    verify_lines = [line for line in config.splitlines() if "jwt_verify(" in line]
    assert len(verify_lines) == 2
    assert "jwt_verify(RS256," in verify_lines[0] and "'rsa-2026'" in verify_lines[0]
    assert "{ var(txn.jwt_alg) -m str RS256 }" in verify_lines[0]
    assert "jwt_verify(ES256," in verify_lines[1] and "'ec-2026'" in verify_lines[1]
    # the token's own alg never chooses the algorithm
    assert "jwt_verify(var(" not in config and "jwt_verify(txn." not in config


def test_duplicate_route_names_are_refused() -> None:
    route = sample_inputs().routes[0]
    with pytest.raises(ValueError, match="maintenance-orders"):
        render_haproxy_config(sample_inputs(routes=[route, route.model_copy()]))


# Every string a user (or an issuer) can put into ProxyInputs, with where it sits.
STRING_FIELDS = {
    "issuer": lambda v: {"auth": {"issuer": v, "audiences": ["a"]}},
    "audience": lambda v: {"auth": {"issuer": "i", "audiences": [v]}},
    "rolesClaim": lambda v: {"auth": {"issuer": "i", "audiences": ["a"], "rolesClaim": v}},
    "kid": lambda v: {
        "auth": {
            "issuer": "i",
            "audiences": ["a"],
            "keys": [{"kid": v, "alg": "RS256", "pem": RSA_PEM}],
        }
    },
    "route name": lambda v: {"routes": [dict(ROUTE, name=v)]},
    "route path": lambda v: {"routes": [dict(ROUTE, path=v)]},
    "role": lambda v: {"routes": [dict(ROUTE, roles=[v])]},
    "backend host": lambda v: {"routes": [dict(ROUTE, backend={"host": v, "port": 80})]},
    "backend pathPrefix": lambda v: {
        "routes": [dict(ROUTE, backend={"host": "h", "port": 80, "pathPrefix": v})]
    },
    "backendTokenEnv": lambda v: {"routes": [dict(ROUTE, backendTokenEnv=v)]},
    "keysDir": lambda v: {"keysDir": v},
    "tlsCertFile": lambda v: {"tlsCertFile": v},
    "bindAddress": lambda v: {"bindAddress": v},
    "exporterAddress": lambda v: {"exporterAddress": v},
}
ROUTE = {"name": "r", "path": "/r", "backend": {"host": "h", "port": 80}}
HOSTILE = [
    "x\nhttp-request return status 200",
    "x\rfoo",
    "x #comment",
    "x'quote",
    'x"quote',
    "x y",
    "x\\y",
    "x\x00y",
]


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_the_models_refuse_every_value_that_could_inject_into_the_config(field, value) -> None:
    document = {"keysDir": "/keys", **STRING_FIELDS[field](value)}
    with pytest.raises(ValidationError) as refused:
        ProxyInputs.model_validate(document)
    message = describe_validation_error(refused.value)
    assert "is invalid" in message or "should be" in message.lower(), message


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
def test_the_injection_test_uses_values_the_models_accept_otherwise(field) -> None:
    """The hostile values above fail for their content, not because the document is wrong."""
    plain = {
        "issuer": "https://sso.example/x",
        "audience": "spine",
        "rolesClaim": "scope",
        "kid": "k1",
        "route name": "r1",
        "route path": "/r1",
        "role": "spine:read",
        "backend host": "h1",
        "backend pathPrefix": "/p",
        "backendTokenEnv": "TOKEN",
        "keysDir": "/k",
        "tlsCertFile": "/tls/cert.pem",
        "bindAddress": "0.0.0.0",
        "exporterAddress": "127.0.0.1",
    }[field]
    ProxyInputs.model_validate({"keysDir": "/keys", **STRING_FIELDS[field](plain)})


def test_a_dollar_in_issuer_or_audience_stays_literal() -> None:
    """HAProxy expands ${VAR} only inside double quotes; these values sit in single quotes."""
    auth = ProxyAuth(issuer="https://sso/${HOME}", audiences=["a${HOME}"], keys=[])
    config = render_haproxy_config(sample_inputs(auth=auth))
    assert "'https://sso/${HOME}'" not in config  # no keys: no issuer check rendered at all
    auth.keys = sample_inputs().auth.keys  # type: ignore[union-attr]
    config = render_haproxy_config(sample_inputs(auth=auth))
    assert "-m str -- 'https://sso/${HOME}'" in config and "-m str -- 'a${HOME}'" in config
    assert '"https://sso/${HOME}"' not in config


def test_a_readable_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        ProxyInputs.model_validate({"keysDir": "/k", "routes": [dict(ROUTE, roles=["a b"])]})
    assert describe_validation_error(refused.value).startswith(
        "routes[0].roles[0]: 'a b' is invalid"
    )


def test_haproxy_is_on_path_for_the_check_above() -> None:
    """So a missing haproxy shows up as a failure in CI, not only as a skip."""
    assert Path(HAPROXY).exists() or shutil.which("haproxy"), "install Debian's haproxy"


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="Debian haproxy is not installed")
def test_haproxy_accepts_the_tls_listener(tmp_path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy.plant-a")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    bundle = tmp_path / "tls.pem"
    bundle.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    inputs = sample_inputs(keys_dir=str(tmp_path), tls_cert_file=str(bundle))
    for verify_key in inputs.auth.keys:  # type: ignore[union-attr]
        (tmp_path / verify_key.file_name()).write_text(verify_key.pem)
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(inputs))
    assert f"ssl crt {bundle} alpn h2,http/1.1" in config.read_text()
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    output = check.stdout + check.stderr
    assert check.returncode == 0 and "WARNING" not in output, output

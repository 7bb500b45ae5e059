"""JWKS to the proxy's PEM keys, and the spec-URL allow-list: pure rules, checked one by one."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OctKey, RSAKey

from spine_operator.oidc import JwksError, convert_jwks, jwks_to_verify_keys
from spine_operator.specfetch import service_host_names, url_refusal

RSA = RSAKey.generate_key(2048, private=True)
EC = ECKey.generate_key("P-256", private=True)
# A 1024-bit modulus (joserfc warns when it makes one, so it is written out as base64url).
SHORT_MODULUS = (
    base64.urlsafe_b64encode(
        rsa.generate_private_key(65537, 1024).public_key().public_numbers().n.to_bytes(128, "big")
    )
    .decode()
    .rstrip("=")
)


def rsa_entry(**extra: Any) -> dict[str, Any]:
    return {**RSA.as_dict(private=False), **extra}


def test_an_rsa_key_without_alg_gets_each_fitting_algorithm_of_the_spine() -> None:
    keys = jwks_to_verify_keys({"keys": [rsa_entry(kid="k1")]}, ["RS256", "ES256", "RS512"])
    assert [(key.kid, key.alg) for key in keys] == [("k1", "RS256"), ("k1", "RS512")]
    public = serialization.load_pem_public_key(keys[0].pem.encode())
    expected = RSA.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == expected
    )
    assert keys[0].pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_an_ec_p256_key_is_es256_only() -> None:
    entry = {**EC.as_dict(private=False), "kid": "ec1"}
    keys = jwks_to_verify_keys({"keys": [entry]}, ["RS256", "ES256", "ES384"])
    assert [(key.kid, key.alg) for key in keys] == [("ec1", "ES256")]


def test_private_parts_in_a_jwks_never_reach_the_pem() -> None:
    leaked = {**RSA.as_dict(private=True), "kid": "leaky"}
    [key] = jwks_to_verify_keys({"keys": [leaked]}, ["RS256"])
    assert "PRIVATE" not in key.pem
    assert key.pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_a_key_without_kid_gets_its_thumbprint_every_time() -> None:
    first = jwks_to_verify_keys({"keys": [rsa_entry()]}, ["RS256"])
    second = jwks_to_verify_keys({"keys": [rsa_entry()]}, ["RS256"])
    assert first[0].kid == second[0].kid == RSA.thumbprint()


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (rsa_entry(kid="enc", use="enc"), "use 'enc', not sig"),
        (rsa_entry(kid="ps", alg="PS256"), "HAProxy 2.6 cannot verify PS*"),
        (rsa_entry(kid="es-on-rsa", alg="ES256"), "does not fit a RSA key"),
        (rsa_entry(kid="rs384", alg="RS384"), "not among the Spine's algorithms"),
        (rsa_entry(kid="bad kid"), "kid must be"),
        (rsa_entry(kid="wrap", key_ops=["wrapKey"]), "key_ops does not include verify"),
        ({**OctKey.generate_key(256).as_dict(), "kid": "hmac"}, "kty 'oct'"),
        ({"kty": "RSA", "kid": "broken", "n": RSA.as_dict()["n"]}, "cannot be read"),
        ({"kty": "RSA", "kid": "short", "n": SHORT_MODULUS, "e": "AQAB"}, "1024 bits"),
        ("not an object", "not a JSON object"),
    ],
)
def test_unusable_keys_are_dropped_with_a_reason_and_the_rest_kept(entry: Any, reason: str) -> None:
    keys, dropped = convert_jwks({"keys": [entry, rsa_entry(kid="good")]}, ["RS256", "ES256"])
    assert [(key.kid, key.alg) for key in keys] == [("good", "RS256")]
    assert len(dropped) == 1 and reason in dropped[0], dropped


def test_a_document_that_is_not_a_jwks_is_an_error() -> None:
    with pytest.raises(JwksError, match='"keys" list'):
        convert_jwks({"issuer": "x"}, ["RS256"])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://orders/openapi.json", True),
        ("http://orders.plant-a.svc.cluster.local:8080/openapi.json", True),
        ("HTTP://ORDERS./openapi.json", True),
        ("https://specs.example.com/press/asyncapi.yaml", True),
        ("https://specs.example.com:443/press/asyncapi.yaml", True),
        ("https://specs.example.com.evil.test/press/x", False),
        ("https://specs.example.com/other/x", False),
        ("https://specs.example.com/press/../admin", False),
        ("https://specs.example.com/press/%2e%2e/admin", False),
        ("http://specs.example.com/press/x", False),
        ("https://specs.example.com:8443/press/x", False),
        ("http://user:pw@orders/openapi.json", False),
        ("file:///etc/passwd", False),
        ("ftp://orders/x", False),
        ("http://10.0.0.1/openapi.json", False),
        ("http://[::1", False),
    ],
)
def test_spec_urls_are_admitted_only_from_services_and_allowed_prefixes(
    url: str, allowed: bool
) -> None:
    refusal = url_refusal(
        url,
        allowed_hosts=service_host_names("orders", "plant-a"),
        allowed_prefixes=["https://specs.example.com/press/"],
    )
    assert (refusal is None) == allowed, refusal
    if not allowed:
        assert url[:20] in refusal or "not a valid URL" in refusal

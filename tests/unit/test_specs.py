"""validate_spec: what a user registering an OpenAPI or AsyncAPI spec reads in `SpecValid`."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import time
from typing import Any

import pytest

from spine_operator import asyncapi_download, asyncapi_schemas
from spine_operator.specs import MAX_SPEC_BYTES, MAX_VALUES, validate_spec

OPENAPI_30_YAML = b"""\
openapi: 3.0.3
info:
  title: Maintenance orders
  version: 2024-01-01
paths:
  /orders:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, default: 10}}
      responses:
        200:
          description: The open orders
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Orders'}
components:
  schemas:
    Orders: {type: array, items: {type: object, properties: {id: {type: integer}}}}
"""

OPENAPI_31: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Orders", "version": "1"},
    "paths": {
        "/orders/{id}": {
            "get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {"200": {"$ref": "#/components/responses/Order"}},
            }
        }
    },
    "components": {
        "responses": {
            "Order": {
                "description": "One order",
                "content": {"application/json": {"schema": {"type": ["object", "null"]}}},
            }
        }
    },
}

ASYNCAPI_26: dict[str, Any] = {
    "asyncapi": "2.6.0",
    "info": {"title": "Press telemetry", "version": "1.0.0"},
    "channels": {
        "plant/a/press-1/temperature": {
            "subscribe": {"message": {"$ref": "#/components/messages/Temperature"}}
        },
        "plant/a/press-1/commands": {
            "publish": {"message": {"$ref": "#/components/messages/Command"}}
        },
    },
    "components": {
        "messages": {
            "Temperature": {"payload": {"$ref": "#/components/schemas/Celsius"}},
            "Command": {"payload": {"type": "object", "properties": {"speed": {"type": "number"}}}},
        },
        "schemas": {"Celsius": {"type": "number", "minimum": -273.15}},
    },
}

ASYNCAPI_30: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "Press telemetry", "version": "1.0.0"},
    "channels": {
        "temperature": {
            "address": "plant/a/press-1/temperature",
            "messages": {"reading": {"$ref": "#/components/messages/Temperature"}},
        },
        "replies": {"address": None},
    },
    "operations": {
        "sendTemperature": {
            "action": "send",
            "channel": {"$ref": "#/channels/temperature"},
            "messages": [{"$ref": "#/channels/temperature/messages/reading"}],
        }
    },
    "components": {"messages": {"Temperature": {"payload": {"type": "number"}}}},
}


def as_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_openapi_30_yaml_is_valid_with_integer_status_keys_and_a_date_version() -> None:
    verdict = validate_spec(OPENAPI_30_YAML, "application/yaml", "HTTP")
    assert verdict.valid, verdict.message
    assert (verdict.family, verdict.version, verdict.path) == ("openapi", "3.0.3", "")
    assert verdict.message == "Valid OpenAPI 3.0.3 spec"
    assert verdict.digest == hashlib.sha256(OPENAPI_30_YAML).hexdigest()
    assert verdict.channels == ()


def test_openapi_31_json_with_a_local_ref_is_valid() -> None:
    verdict = validate_spec(as_json(OPENAPI_31), "application/vnd.oai.openapi+json", "HTTP")
    assert verdict.valid, verdict.message
    assert verdict.version == "3.1.0"


def test_openapi_30_missing_response_description_names_the_response() -> None:
    raw = OPENAPI_30_YAML.replace(b"          description: The open orders\n", b"")
    verdict = validate_spec(raw, "application/yaml", "HTTP")
    assert not verdict.valid
    assert verdict.path == "$.paths['/orders'].get.responses['200']"
    assert "'description' is a required property" in verdict.message
    assert verdict.message.startswith("Invalid OpenAPI 3.0.3 spec at $.paths['/orders']")


def test_openapi_default_of_the_wrong_type_is_located_in_the_document() -> None:
    raw = OPENAPI_30_YAML.replace(b"default: 10", b"default: ten")
    verdict = validate_spec(raw, "application/yaml", "HTTP")
    assert not verdict.valid
    assert verdict.path == "$.paths['/orders'].get.parameters[0].schema.default"
    assert "'ten' is not of type 'integer'" in verdict.message


def test_openapi_31_path_parameter_not_required_is_refused() -> None:
    document = copy.deepcopy(OPENAPI_31)
    document["paths"]["/orders/{id}"]["get"]["parameters"][0]["required"] = False
    verdict = validate_spec(as_json(document), "application/json", "HTTP")
    assert not verdict.valid
    assert verdict.path.startswith("$.paths['/orders/{id}'].get.parameters[0]")
    assert verdict.version == "3.1.0"


def test_asyncapi_26_with_local_refs_is_valid_and_lists_its_channels() -> None:
    verdict = validate_spec(as_json(ASYNCAPI_26), "application/vnd.aai.asyncapi+json", "MQTT")
    assert verdict.valid, verdict.message
    assert (verdict.family, verdict.version) == ("asyncapi", "2.6.0")
    assert verdict.channels == ("plant/a/press-1/temperature", "plant/a/press-1/commands")


def test_asyncapi_26_error_behind_a_ref_is_reported_where_it_is_used() -> None:
    document = copy.deepcopy(ASYNCAPI_26)
    document["components"]["schemas"]["Celsius"]["minimum"] = "cold"
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert not verdict.valid
    assert verdict.path.startswith("$.channels['plant/a/press-1/temperature'].subscribe.message")
    assert "'cold' is not of type 'number'" in verdict.message
    assert verdict.channels == ()


def test_asyncapi_26_unknown_operation_field_is_refused_with_its_path() -> None:
    document = copy.deepcopy(ASYNCAPI_26)
    document["channels"]["plant/a/press-1/commands"]["publish"]["qos"] = 1
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert not verdict.valid
    assert verdict.path == "$.channels['plant/a/press-1/commands'].publish"
    assert "'qos' does not match any of the regexes" in verdict.message


def test_asyncapi_30_keeps_operation_channel_refs_and_lists_addresses() -> None:
    verdict = validate_spec(as_json(ASYNCAPI_30), "application/yaml", "MQTT")
    assert verdict.valid, verdict.message
    assert verdict.version == "3.0.0"
    # `replies` has a null address (unknown at design time): nothing to allow for it.
    assert verdict.channels == ("plant/a/press-1/temperature",)


def test_asyncapi_30_channel_given_by_ref_lists_the_address_it_points_to() -> None:
    document = copy.deepcopy(ASYNCAPI_30)
    document["components"]["channels"] = {"commands": {"address": "plant/a/press-1/commands"}}
    document["channels"]["commands"] = {"$ref": "#/components/channels/commands"}
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert verdict.valid, verdict.message
    assert verdict.channels == ("plant/a/press-1/temperature", "plant/a/press-1/commands")


def test_asyncapi_30_operation_channel_must_be_a_ref() -> None:
    document = copy.deepcopy(ASYNCAPI_30)
    document["operations"]["sendTemperature"]["channel"] = document["channels"]["temperature"]
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert not verdict.valid
    assert verdict.path.startswith("$.operations.sendTemperature")


def test_asyncapi_30_wrong_action_names_the_field_and_the_choices() -> None:
    document = copy.deepcopy(ASYNCAPI_30)
    document["operations"]["sendTemperature"]["action"] = "publish"
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert not verdict.valid
    assert verdict.path == "$.operations.sendTemperature.action"
    assert "'publish' is not one of ['send', 'receive']" in verdict.message


@pytest.mark.parametrize(
    ("document", "protocol", "wanted"),
    [
        (ASYNCAPI_26, "HTTP", "protocol HTTP needs an OpenAPI spec, but this is AsyncAPI 2.6.0"),
        (OPENAPI_31, "MQTT", "protocol MQTT needs an AsyncAPI spec, but this is OpenAPI 3.1.0"),
    ],
)
def test_a_spec_of_the_other_family_is_refused(
    document: dict[str, Any], protocol: Any, wanted: str
) -> None:
    verdict = validate_spec(as_json(document), "application/json", protocol)
    assert not verdict.valid
    assert wanted in verdict.message


def test_media_type_announcing_the_other_family_is_refused() -> None:
    verdict = validate_spec(as_json(OPENAPI_31), "application/vnd.aai.asyncapi+json", "HTTP")
    assert not verdict.valid
    assert "announces AsyncAPI" in verdict.message


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    started = time.monotonic()
    verdict = validate_spec("\n".join(lines).encode(), "application/yaml", "HTTP")
    assert time.monotonic() - started < 1.0
    assert not verdict.valid
    assert "expands to more than" in verdict.message


def test_a_ref_bomb_is_refused_before_the_validator_walks_it() -> None:
    schemas: dict[str, Any] = {
        f"s{i}": {
            "allOf": [
                {"$ref": f"#/components/schemas/s{i + 1}"},
                {"$ref": f"#/components/schemas/s{i + 1}"},
            ]
        }
        for i in range(30)
    }
    schemas["s30"] = {"type": "string"}
    document = copy.deepcopy(OPENAPI_31)
    document["components"]["schemas"] = schemas
    started = time.monotonic()
    verdict = validate_spec(as_json(document), "application/json", "HTTP")
    assert time.monotonic() - started < 1.0
    assert not verdict.valid
    assert f"$refs expand to more than {MAX_VALUES} values" in verdict.message


def test_an_oversized_spec_is_refused_without_parsing() -> None:
    raw = b"openapi: 3.0.3\n#" + b"x" * MAX_SPEC_BYTES
    verdict = validate_spec(raw, "application/yaml", "HTTP")
    assert not verdict.valid
    assert f"at most {MAX_SPEC_BYTES} bytes (1 MiB)" in verdict.message
    assert verdict.digest == hashlib.sha256(raw).hexdigest()


def test_a_ref_outside_the_document_is_refused_and_never_read() -> None:
    document = copy.deepcopy(OPENAPI_31)
    document["paths"]["/orders/{id}"]["get"]["responses"]["200"] = {"$ref": "file:///etc/passwd"}
    verdict = validate_spec(as_json(document), "application/json", "HTTP")
    assert not verdict.valid
    assert verdict.path == "$.paths['/orders/{id}'].get.responses['200']['$ref']"
    assert "points outside the document" in verdict.message
    assert "root:" not in verdict.message


def test_a_ref_to_the_wrong_kind_of_object_is_a_verdict_not_a_crash() -> None:
    document = copy.deepcopy(OPENAPI_31)
    document["paths"]["/orders/{id}"]["get"]["parameters"] = [{"$ref": "#/paths"}]
    verdict = validate_spec(as_json(document), "application/json", "HTTP")
    assert not verdict.valid
    assert "the wrong kind of object" in verdict.message


def test_a_dangling_ref_names_where_it_is() -> None:
    document = copy.deepcopy(ASYNCAPI_26)
    del document["components"]["messages"]["Command"]
    verdict = validate_spec(as_json(document), "application/json", "MQTT")
    assert not verdict.valid
    assert verdict.path == "$.channels['plant/a/press-1/commands'].publish.message['$ref']"
    assert "'#/components/messages/Command' does not resolve" in verdict.message


@pytest.mark.parametrize(
    ("raw", "media_type", "wanted"),
    [
        (b"openapi: 3.0.3\ninfo: [", "application/yaml", "not valid YAML"),
        (b"{'openapi': 1", "application/json", "not valid JSON"),
        (b"openapi: 3.0.3\nopenapi: 3.1.0\n", "", "key 'openapi' appears twice"),
        (b"- a list", "", "must be a mapping"),
        (b"openapi: 3.0\ninfo: {}\n", "", 'write a string such as "3.0.3"'),
        (b"swagger: '2.0'\n", "", "Swagger 2.0 is not supported"),
        (b"title: nothing\n", "", "neither an OpenAPI document"),
        (b"openapi: 3.0.3\n", "text/html", "not JSON or YAML"),
        (b"\xff\xfe", "", "not UTF-8"),
    ],
)
def test_unreadable_documents_get_a_reason(raw: bytes, media_type: str, wanted: str) -> None:
    verdict = validate_spec(raw, media_type, "HTTP")
    assert not verdict.valid
    assert wanted in verdict.message
    assert verdict.family == "openapi"


def test_an_unsupported_asyncapi_version_lists_the_supported_ones() -> None:
    verdict = validate_spec(b"asyncapi: 1.2.0\n", "application/yaml", "MQTT")
    assert not verdict.valid
    assert verdict.path == "$.asyncapi"
    assert "2.6.0" in verdict.message and "3.0.0" in verdict.message


def test_an_unchanged_spec_is_not_validated_again() -> None:
    raw = json.dumps({**OPENAPI_31, "x-run": time.time_ns()}).encode()
    started = time.perf_counter()
    first = validate_spec(raw, "application/json", "HTTP")
    first_took = time.perf_counter() - started
    started = time.perf_counter()
    again = validate_spec(raw, "application/json", "HTTP")
    assert again == first
    assert time.perf_counter() - started < first_took / 5


def test_digest_is_of_the_raw_bytes_so_a_reformatted_spec_is_a_new_one() -> None:
    compact = validate_spec(as_json(OPENAPI_31), "application/json", "HTTP")
    pretty = validate_spec(json.dumps(OPENAPI_31, indent=2).encode(), "application/json", "HTTP")
    assert compact.valid and pretty.valid
    assert compact.digest != pretty.digest


def test_missing_asyncapi_schemas_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(asyncapi_schemas.ENV_VAR, str(tmp_path))
    document = {**ASYNCAPI_26, "x-unseen": str(tmp_path)}  # not a remembered verdict
    with pytest.raises(asyncapi_schemas.AsyncApiSchemasMissing, match="make install"):
        validate_spec(as_json(document), "application/json", "MQTT")


def test_the_download_refuses_a_tarball_that_does_not_match_the_pinned_integrity(
    tmp_path,
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b'{"title": "forged"}'
        member = tarfile.TarInfo("package/schemas/2.6.0-without-$id.json")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(asyncapi_download.DownloadError, match="pinned integrity"):
        asyncapi_download.unpack(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_schema_dialect_the_validator_does_not_know_is_refused_not_fetched() -> None:
    document = copy.deepcopy(OPENAPI_31)
    document["components"]["schemas"] = {
        "Order": {"$schema": "http://127.0.0.1:9/meta", "type": "object"}
    }
    verdict = validate_spec(as_json(document), "application/json", "HTTP")
    assert not verdict.valid
    assert verdict.path == "$.components.schemas.Order"
    assert "Unknown JSON Schema dialect: 'http://127.0.0.1:9/meta'" in verdict.message

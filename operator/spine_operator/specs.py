"""Validation of the API specs a ServiceRegistration carries: OpenAPI 3.0/3.1 and AsyncAPI 2.x/3.x.

The registration reconcile calls `validate_spec` on the raw bytes (inline value, ConfigMap key or
fetched URL) and writes the verdict into the `SpecValid` condition. OpenAPI goes through
openapi-spec-validator, AsyncAPI through the official JSON Schemas of `@asyncapi/specs`
(asyncapi_schemas.py). Pure: it never fetches, and refuses a `$ref` pointing outside the document.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from jsonschema.exceptions import ValidationError
from jsonschema_path import SchemaPath
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator
from openapi_spec_validator.validation.keywords import KeywordValidator
from openapi_spec_validator.validation.validators import SpecValidator
from referencing.exceptions import Unresolvable

from spine_operator import asyncapi_schemas
from spine_operator.yamlfiles import YamlError, expanded_size, load_document

MAX_SPEC_BYTES = 1024 * 1024
# Values in a document with every alias and `$ref` use expanded. openapi-spec-validator took
# 60 µs (3.0) to 250 µs (3.1) per value here, so a spec at the limit costs 6 to 25 s of CPU once
# (callers run it in a thread; verdicts are remembered); a ref bomb is refused before that.
MAX_VALUES = 100_000
MAX_MESSAGE_CHARS = 400  # a condition message stays readable; validator messages quote values

Family = Literal["openapi", "asyncapi"]
FAMILY_NAMES = {"openapi": "OpenAPI", "asyncapi": "AsyncAPI"}
FAMILY_OF_PROTOCOL: dict[str, Family] = {"HTTP": "openapi", "MQTT": "asyncapi"}
OPENAPI_VERSION_PATTERN = re.compile(r"^3\.[01]\.\d+$")
# MQTT topic wildcards and parameters are the registration's business; an address is only
# checked to be a usable string (no NUL, no newline), as the broker's ACL will carry it.
CHANNEL_ADDRESS_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")


@dataclass(frozen=True)
class SpecVerdict:
    valid: bool
    message: str
    path: str  # JSONPath of the first problem ($.paths['/orders'].get), "" if valid
    family: Family
    version: str
    digest: str  # sha256 hex of the raw bytes
    channels: tuple[str, ...] = ()  # AsyncAPI channel addresses; () for OpenAPI


class _Refused(Exception):
    """A problem with the document, found before or instead of schema validation."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def validate_spec(raw: bytes, media_type: str, protocol: Literal["HTTP", "MQTT"]) -> SpecVerdict:
    """The verdict on one spec; never raises on bad input (only AsyncApiSchemasMissing when
    the operator was installed without the AsyncAPI schemas).

    CPU-bound (an OpenAPI 3.1 spec of 57 KB takes about 0.9 s, 3.0 about 0.25 s): call it in a
    thread. Verdicts are remembered by the spec's digest, so a reconcile of an unchanged spec
    costs a hash.
    """
    digest = hashlib.sha256(raw).hexdigest()
    cache_key = (digest, media_type, protocol)
    with _VERDICTS_LOCK:
        if cache_key in _VERDICTS:
            _VERDICTS.move_to_end(cache_key)
            return _VERDICTS[cache_key]
    verdict = _validate(raw, media_type, protocol, digest)
    with _VERDICTS_LOCK:
        _VERDICTS[cache_key] = verdict
        while len(_VERDICTS) > VERDICT_CACHE_SIZE:
            _VERDICTS.popitem(last=False)
    return verdict


VERDICT_CACHE_SIZE = 512
_VERDICTS: OrderedDict[tuple[str, str, str], SpecVerdict] = OrderedDict()
_VERDICTS_LOCK = threading.Lock()


def _validate(raw: bytes, media_type: str, protocol: str, digest: str) -> SpecVerdict:
    expected = FAMILY_OF_PROTOCOL.get(protocol, "openapi")
    family: Family = expected
    version = ""
    try:
        if len(raw) > MAX_SPEC_BYTES:
            raise _Refused(
                f"the spec is {len(raw)} bytes; at most {MAX_SPEC_BYTES} bytes (1 MiB) are accepted"
            )
        document = _parse(raw, media_type)
        family, version = _identify(document)
        if family != expected:
            raise _Refused(
                f"protocol {protocol} needs an {FAMILY_NAMES[expected]} spec, but this is "
                f"{FAMILY_NAMES[family]} {version}"
            )
        hinted = _family_of_media_type(media_type)
        if hinted is not None and hinted != family:
            raise _Refused(
                f"mediaType {media_type!r} announces {FAMILY_NAMES[hinted]}, but the document "
                f"is {FAMILY_NAMES[family]} {version}"
            )
        _check_refs(document)
        if family == "openapi":
            _validate_openapi(document, version)
            channels: tuple[str, ...] = ()
        else:
            channels = _validate_asyncapi(document, version)
    except _Refused as refused:
        problem = refused
    except RecursionError:
        problem = _Refused("the document is nested too deeply")
    except asyncapi_schemas.AsyncApiSchemasMissing:
        raise
    except Exception as error:  # a validator's own bug must not stop a reconcile
        # Seen: openapi-spec-validator's KeyError on a $ref to the wrong kind of object.
        problem = _Refused(
            f"the validator failed on this document ({type(error).__name__}: "
            f"{str(error)[:100]}); is a $ref pointing to the wrong kind of object?"
        )
    else:
        return SpecVerdict(
            valid=True,
            message=f"Valid {FAMILY_NAMES[family]} {version} spec",
            path="",
            family=family,
            version=version,
            digest=digest,
            channels=channels,
        )
    name = f"{FAMILY_NAMES[family]} {version}".strip()
    where = f" at {problem.path}" if problem.path else ""
    return SpecVerdict(
        valid=False,
        message=_shorten(f"Invalid {name} spec{where}: {problem.message}"),
        path=problem.path,
        family=family,
        version=version,
        digest=digest,
    )


# --- parsing ---------------------------------------------------------------------------------


def _media_essence(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


def _family_of_media_type(media_type: str) -> Family | None:
    essence = _media_essence(media_type)
    if "vnd.oai.openapi" in essence:
        return "openapi"
    if "vnd.aai.asyncapi" in essence:
        return "asyncapi"
    return None


def _parse(raw: bytes, media_type: str) -> Any:
    essence = _media_essence(media_type)
    is_json = essence.endswith("json")
    is_yaml = "yaml" in essence or essence.endswith("yml")
    if essence and not (is_json or is_yaml):
        raise _Refused(
            f"mediaType {media_type!r} is not JSON or YAML; use application/json, "
            "application/yaml, application/vnd.oai.openapi+json or "
            "application/vnd.aai.asyncapi+yaml"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _Refused(f"the spec is not UTF-8 text (byte {error.start})") from None
    try:
        if is_json:
            try:
                document = json.loads(text)
            except ValueError as error:
                raise _Refused(f"not valid JSON: {error}") from None
        else:
            try:
                # JSON first: it is YAML too, and far cheaper to read.
                document = json.loads(text)
            except ValueError:
                document = load_document(text)
        expanded_size(document, MAX_VALUES)
        document = _as_json(document, "$")
    except YamlError as error:
        raise _Refused(str(error)) from None
    except RecursionError:
        raise _Refused("the document is nested too deeply") from None
    if not isinstance(document, dict):
        raise _Refused("the document must be a mapping (an OpenAPI or AsyncAPI object)")
    return document


def _as_json(value: Any, path: str) -> Any:
    """The document in JSON's types: YAML's integer keys (`200:` under `responses`) become
    strings, dates become ISO text (an unquoted `version: 2024-01-01`); a binary or set is
    refused, since JSON has no such thing."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            text = _key_text(key, path)
            result[text] = _as_json(item, _child(path, text))
        return result
    if isinstance(value, list):
        return [_as_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise _Refused(f"a YAML {type(value).__name__} has no JSON equivalent", path)


def _key_text(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return str(key)
    if isinstance(key, (datetime.date, datetime.datetime)):
        return key.isoformat()
    raise _Refused(f"a mapping key must be a string, not a {type(key).__name__}", path)


_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")  # jsonschema's rule for `.name`


def _child(path: str, key: str) -> str:
    """JSONPath of a member, in the notation of jsonschema's `json_path`, so every path in a
    verdict reads the same whichever check found the problem."""
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def _identify(document: dict[str, Any]) -> tuple[Family, str]:
    if "openapi" in document:
        version = document["openapi"]
        if not isinstance(version, str) or not OPENAPI_VERSION_PATTERN.match(version):
            raise _Refused(
                f"openapi: {version!r} is not a supported version; write a string such as "
                '"3.0.3" or "3.1.0" (OpenAPI 3.0 and 3.1 are supported)',
                "$.openapi",
            )
        return "openapi", version
    if "asyncapi" in document:
        version = document["asyncapi"]
        supported = asyncapi_schemas.available_versions()
        if not isinstance(version, str) or version not in supported:
            raise _Refused(
                f"asyncapi: {version!r} is not a supported version; write one of "
                f"{', '.join(supported)} as a string",
                "$.asyncapi",
            )
        return "asyncapi", version
    if "swagger" in document:
        raise _Refused(
            "Swagger 2.0 is not supported: convert it to OpenAPI 3.0 or 3.1", "$.swagger"
        )
    raise _Refused(
        "neither an OpenAPI document (an `openapi: 3.x.y` field) nor an AsyncAPI document "
        "(an `asyncapi: 2.x.0 or 3.x.0` field)"
    )


def _check_refs(document: dict[str, Any]) -> None:
    """The operator fetches nothing a spec points to (no file:, no http: from inside the
    cluster), so every `$ref` must be local to the document, and resolve there."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, dict):
            reference = value.get("$ref")
            if isinstance(reference, str):
                if not reference.startswith("#"):
                    raise _Refused(
                        f"$ref {reference[:200]!r} points outside the document; only local "
                        "references (#/components/...) are supported: bundle the spec into one "
                        "document",
                        _child(path, "$ref"),
                    )
                _resolve_pointer(document, reference, _child(path, "$ref"))
            for key, item in value.items():
                check(item, _child(path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, f"{path}[{index}]")

    check(document, "$")
    _check_expansion(document)


def _check_expansion(document: dict[str, Any]) -> None:
    """Validators walk a `$ref` once per use: a few lines of references to references
    (each schema an allOf of two uses of the next) expand exponentially and would keep the
    validator busy for hours. Count the values with every use expanded, each target's size
    computed once, and refuse past MAX_VALUES."""
    sizes: dict[str, int] = {}

    def size(value: Any, expanding: tuple[str, ...]) -> int:
        if isinstance(value, dict):
            reference = value.get("$ref")
            if isinstance(reference, str):
                if reference in expanding:
                    return 1
                if reference not in sizes:
                    target = _resolve_pointer(document, reference, "")
                    sizes[reference] = size(target, (*expanding, reference))
                return sizes[reference]
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            return 1
        total = 1
        for child in children:
            total += size(child, expanding)
            if total > MAX_VALUES:
                raise _Refused(
                    f"the document's $refs expand to more than {MAX_VALUES} values; "
                    "a spec that large cannot be validated"
                )
        return total

    size(document, ())


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _first_problem(errors: Iterator[ValidationError]) -> _Refused | None:
    """The first error; for a oneOf/anyOf, the branch the document came closest to (its error
    lies deepest in the document; the first branch on a tie), so the message names the field at
    fault rather than "is not valid under any of the given schemas" or "'$ref' is required"."""
    error = next(iter(errors), None)
    if error is None:
        return None
    while error.context:
        error = max(error.context, key=_depth)
    return _Refused(error.message, error.json_path)


def _depth(error: ValidationError) -> int:
    """How deep into the document the deepest error under this one lies."""
    return max([len(error.absolute_path), *(_depth(inner) for inner in error.context)])


# --- OpenAPI ---------------------------------------------------------------------------------


def _located(keyword_class: type[KeywordValidator], suffix: tuple[str, ...]) -> type:
    """A keyword validator whose errors carry the document path of what it checked:
    openapi-spec-validator's semantic checks (defaults, duplicate parameters) yield errors
    located relative to the checked value only."""

    class Located(keyword_class):  # type: ignore[valid-type, misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Iterator[ValidationError]:
            where = next((arg for arg in args if isinstance(arg, SchemaPath)), None)
            for error in super().__call__(*args, **kwargs):
                if where is not None and not getattr(error, "_spine_located", False):
                    error.path.extendleft(reversed([*where.parts, *suffix]))
                    setattr(error, "_spine_located", True)  # noqa: B010 - not a declared field
                yield error

    Located.__name__ = f"Located{keyword_class.__name__}"
    return Located


def _without_fetching(validator_class: type[SpecValidator]) -> type[SpecValidator]:
    keywords = {
        name: _located(cls, ("default",) if name == "default" else ())
        for name, cls in validator_class.keyword_validators.items()
    }
    # No resolver handlers: a $ref can only be resolved inside the document (defence in depth
    # behind _check_refs: never an http: or file: read from the operator).
    return type(
        f"Local{validator_class.__name__}",
        (validator_class,),
        {"resolver_handlers": {}, "keyword_validators": keywords},
    )


_OPENAPI_VALIDATORS = {
    "3.0": _without_fetching(OpenAPIV30SpecValidator),
    "3.1": _without_fetching(OpenAPIV31SpecValidator),
}


def _validate_openapi(document: dict[str, Any], version: str) -> None:
    validator = _OPENAPI_VALIDATORS[version[:3]](document)
    try:
        problem = _first_problem(validator.iter_errors())
    except Unresolvable as error:
        raise _Refused(f"$ref {str(error.ref)[:200]!r} does not resolve in the document") from None
    except RecursionError:
        raise _Refused("the document's $refs are nested too deeply (a $ref cycle?)") from None
    if problem is not None:
        raise problem


# --- AsyncAPI --------------------------------------------------------------------------------


def _validate_asyncapi(document: dict[str, Any], version: str) -> tuple[str, ...]:
    validator = asyncapi_schemas.validator_for(version)
    major = version.split(".", 1)[0]
    # 2.x: validated with every local $ref resolved, as AsyncAPI's own parser does: a Reference
    # left in place can satisfy both branches of a oneOf (TESTING.md, section 9), and what it
    # points to is then checked where it is used. 3.x: some places (operation.channel,
    # operation.messages) must stay References, so 3.x documents are validated as written.
    target = _inline_local_refs(document) if major == "2" else document
    try:
        problem = _first_problem(validator.iter_errors(target))
    except RecursionError:
        raise _Refused("the document is nested too deeply") from None
    if problem is not None:
        raise problem
    return _channel_addresses(document, major)


def _resolve_pointer(document: Any, reference: str, path: str) -> Any:
    value = document
    for part in unquote(reference[1:]).split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise _Refused(f"$ref {reference[:200]!r} does not resolve in the document", path)
    return value


def _inline_local_refs(document: dict[str, Any]) -> Any:
    """The document with each local `$ref` replaced by what it points to. A reference back into
    one being expanded (a recursive payload schema) stays as written; the expansion is bounded
    by MAX_VALUES, so a few lines of references to references cannot grow without limit."""
    budget = [MAX_VALUES]

    def inline(value: Any, path: str, expanding: tuple[str, ...]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Refused(f"the document's $refs expand to more than {MAX_VALUES} values")
        if isinstance(value, dict):
            reference = value.get("$ref")
            if isinstance(reference, str) and reference.startswith("#"):
                if reference in expanding:
                    return value
                target = _resolve_pointer(document, reference, _child(path, "$ref"))
                return inline(target, path, (*expanding, reference))
            return {key: inline(item, _child(path, key), expanding) for key, item in value.items()}
        if isinstance(value, list):
            return [inline(item, f"{path}[{index}]", expanding) for index, item in enumerate(value)]
        return value

    return inline(document, "$", ())


def _channel_addresses(document: dict[str, Any], major: str) -> tuple[str, ...]:
    channels = document.get("channels") or {}
    addresses: list[str] = []
    for key, channel in channels.items():
        if major == "2":
            address: Any = key
        else:
            if isinstance(channel, dict) and isinstance(channel.get("$ref"), str):
                channel = _resolve_pointer(document, channel["$ref"], _child("$.channels", key))
            # 3.x: a null or absent address means "unknown or dynamic": nothing to allow.
            address = channel.get("address") if isinstance(channel, dict) else None
            if address is None:
                continue
        if not isinstance(address, str) or not CHANNEL_ADDRESS_PATTERN.match(address):
            raise _Refused(
                "a channel address must be text without control characters",
                _child(_child("$.channels", key), "address") if major != "2" else "$.channels",
            )
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)

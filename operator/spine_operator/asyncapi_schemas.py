"""Where the official AsyncAPI JSON Schemas are found, and their validators, built once each.

The schemas come from the npm package `@asyncapi/specs` at the version pinned here; they are
not in our git tree. `python -m spine_operator.asyncapi_download` (run by `make install` and by
the Dockerfile's build stage) puts them in `schemas_dir()`: `$SPINE_ASYNCAPI_SCHEMAS` if set
(the image sets it), else ~/.cache/spine/asyncapi-specs/<version>/. `specs.py` reads them.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft7Validator

PACKAGE = "@asyncapi/specs"
VERSION = "6.11.1"
# npm's `dist.integrity` of the tarball: the download is refused unless its sha512 matches.
INTEGRITY = (
    "sha512-A3WBLqAKGoJ2+6FWFtpjBlCQ1oFCcs4GxF7zsIGvNqp/klGUHjlA3aAcZ9XMMpLGE8zPeYDz2x9FmO6DSuKraQ"
    "=="
)
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/specs-{VERSION}.tgz"
ENV_VAR = "SPINE_ASYNCAPI_SCHEMAS"
# Released AsyncAPI versions we validate (2.x and 3.x; 1.x is another format, rc's are drafts).
SUPPORTED_VERSION_PATTERN = re.compile(r"^[23]\.\d+\.\d+$")
MARKER_FILE = "SOURCE"


class AsyncApiSchemasMissing(RuntimeError):
    """The operator was installed without the AsyncAPI schemas: a deployment problem, not a
    problem of the spec being validated."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spine" / "asyncapi-specs" / VERSION


def schemas_dir() -> Path:
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else default_cache_dir()


def _missing(directory: Path) -> AsyncApiSchemasMissing:
    return AsyncApiSchemasMissing(
        f"The AsyncAPI JSON Schemas ({PACKAGE} {VERSION}) are not in {directory}: run "
        f"`make install` or `python -m spine_operator.asyncapi_download`, or set {ENV_VAR} to "
        "the directory that holds them"
    )


def available_versions() -> tuple[str, ...]:
    """The AsyncAPI versions the installed schemas cover, oldest first."""
    return _versions_in(schemas_dir())


@lru_cache(maxsize=4)
def _versions_in(root: Path) -> tuple[str, ...]:
    directory = root / "schemas"
    if not (root / MARKER_FILE).is_file():
        raise _missing(root)
    versions = [
        file.stem for file in directory.glob("*.json") if SUPPORTED_VERSION_PATTERN.match(file.stem)
    ]
    return tuple(sorted(versions, key=lambda text: tuple(int(part) for part in text.split("."))))


def validator_for(version: str) -> Draft7Validator:
    """The Draft 7 validator of one AsyncAPI version's schema (its `-without-$id` form, whose
    references are all local, so nothing is ever fetched)."""
    return _validator(schemas_dir(), version)


@lru_cache(maxsize=16)
def _validator(directory: Path, version: str) -> Draft7Validator:
    try:
        schema = json.loads((directory / "schemas" / f"{version}.json").read_text())
    except FileNotFoundError:
        raise _missing(directory) from None
    return Draft7Validator(schema)

"""`spine render`: the Kubernetes objects the operator would create, offline, like `helm template`.

For GitOps review: apply a change to the YAML, render before and after, diff. Generated Secrets
are shown without their data (the operator makes the values at apply time, once), and children
have no ownerReferences (the live owner's uid is not known offline).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spine_operator.api.registry import API_VERSION, kind_by_name
from spine_operator.api.spine import SpineSpec
from spine_operator.build import broker as broker_build
from spine_operator.environment import Environment
from spine_operator.labels import GENERATED
from spine_runtime.common.configsource import describe_validation_error


class RenderError(ValueError):
    """Input that cannot be rendered; the message names the file, the object and the field."""


@dataclass(frozen=True)
class Resource:
    source: str
    body: dict[str, Any]

    @property
    def label(self) -> str:
        name = (self.body.get("metadata") or {}).get("name", "(no name)")
        return f"{self.source}: {self.body.get('kind', '(no kind)')}/{name}"


def load_resources(paths: Iterable[Path]) -> list[Resource]:
    """Every `spine.iiot.dev` object in the files (directories: their *.yaml and *.yml)."""
    resources: list[Resource] = []
    for path in paths:
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            try:
                documents = list(yaml.safe_load_all(file.read_text()))
            except (OSError, yaml.YAMLError) as error:
                raise RenderError(f"{file}: cannot read YAML: {error}") from None
            for index, document in enumerate(documents, start=1):
                if document is None:
                    continue
                source = f"{file} (document {index})"
                if not isinstance(document, dict):
                    raise RenderError(f"{source}: not a Kubernetes object")
                if document.get("apiVersion") != API_VERSION:
                    continue  # other objects pass through kubectl, not the operator
                resources.append(Resource(source, document))
    return resources


def render_spine(body: dict[str, Any], env: Environment) -> list[dict[str, Any]]:
    metadata = body.get("metadata") or {}
    namespace = metadata.get("namespace") or "default"
    name = metadata["name"]
    spec = SpineSpec.model_validate(body.get("spec") or {})
    objects: list[dict[str, Any]] = []
    if not spec.broker.admin_secret_name:
        secret = broker_build.build_admin_secret(namespace, name, "")
        secret.pop("stringData")
        secret["metadata"]["annotations"] = {GENERATED: "true (data generated at apply time)"}
        objects.append(secret)
    digests = broker_build.SecretDigests(admin="(live Secret)", tls="(live Secret)")
    objects += broker_build.build_broker(spec.broker, env, namespace, name, digests).all()
    return objects


RENDERERS = {"Spine": render_spine}


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (config files) as `|` blocks a reviewer can read and diff."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockStyleDumper, sort_keys=False)


def render(resources: list[Resource], env: Environment) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    for resource in resources:
        kind = resource.body.get("kind", "")
        if kind_by_name(kind) is None or kind not in RENDERERS:
            problems.append(f"{resource.label}: unknown kind {kind!r}")
            continue
        if not (resource.body.get("metadata") or {}).get("name"):
            problems.append(f"{resource.label}: metadata.name is required")
            continue
        try:
            objects += RENDERERS[kind](resource.body, env)
        except ValidationError as error:
            problems.append(f"{resource.label}: {describe_validation_error(error, 'spec')}")
    if problems:
        raise RenderError("\n".join(problems))
    return objects

"""`spine render`: the Kubernetes objects the operator would create, offline, like `helm template`.

For GitOps review: apply a change to the YAML, render before and after, diff. Generated Secrets
are shown without their data (the operator makes the values at apply time, once), and children
have no ownerReferences (the live owner's uid is not known offline). A Gateway's tags are checked
against the TwinModels of its namespace among the inputs, as the operator would check them; a
directory is read with its subdirectories.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.flow import FlowSpec
from spine_operator.api.gateway import GatewaySpec
from spine_operator.api.kinds import API_VERSION, GROUP, kind_by_name
from spine_operator.api.serviceregistration import ServiceRegistrationSpec
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import broker, flow, gateway, proxy, twin
from spine_operator.desired.common import oldest
from spine_operator.desired.logins import Login, twin_login
from spine_operator.desired.plan import Plan, Refusal, SecretInput
from spine_operator.environment import Environment
from spine_operator.errors import ReconcileError
from spine_operator.labels import GENERATED
from spine_operator.yamlfiles import YamlError, load_documents
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.base import DNS_LABEL_PATTERN

DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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


def name_problem(body: dict[str, Any]) -> str | None:
    """Why the object's name or namespace would be refused by the API server, or None. They
    become object names and, in `spine up`, paths: nothing else may get through."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        return "metadata.name is required"
    name, namespace = metadata.get("name"), metadata.get("namespace", "default")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        return (
            f"metadata.name {name!r}: use lower-case letters, digits, '-' and '.', starting "
            "and ending with a letter or digit, at most 253 characters"
        )
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace):
        return (
            f"metadata.namespace {namespace!r}: a namespace is a DNS label: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters"
        )
    return None


def load_resources(paths: Iterable[Path]) -> list[Resource]:
    """Every `spine.iiot.dev` object in the files (directories: their *.yaml and *.yml).

    RenderError names every file and object that kubectl or the API server would refuse."""
    resources: list[Resource] = []
    problems: list[str] = []
    for path in paths:
        files = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            try:
                documents = load_documents(file)
            except YamlError as error:
                problems.append(f"{file}: {error}")
                continue
            for index, document in enumerate(documents, start=1):
                if document is None:
                    continue
                source = f"{file} (document {index})"
                if not isinstance(document, dict) or not document.get("apiVersion"):
                    problems.append(f"{source}: not a Kubernetes object (no apiVersion)")
                    continue
                api_version = str(document["apiVersion"])
                if api_version.split("/")[0] == GROUP and api_version != API_VERSION:
                    problems.append(
                        f"{source}: apiVersion {api_version} is not served; use {API_VERSION}"
                    )
                    continue
                if api_version != API_VERSION:
                    continue  # other objects pass through kubectl, not the operator
                resource = Resource(source, document)
                problem = name_problem(document)
                if problem:
                    problems.append(f"{resource.label}: {problem}")
                    continue
                resources.append(resource)
    if problems:
        raise RenderError("\n".join(problems))
    return resources


def load_config_maps(paths: Iterable[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """The v1 ConfigMaps among the files, by (namespace, name): a ServiceRegistration's spec
    may be in one (spec.apis[].spec.configMapKeyRef). Unreadable files are load_resources'
    to report."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        files = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            try:
                documents = load_documents(file)
            except YamlError:
                continue
            for document in documents:
                if (
                    isinstance(document, dict)
                    and document.get("apiVersion") == "v1"
                    and document.get("kind") == "ConfigMap"
                    and isinstance(document.get("metadata"), dict)
                ):
                    key = (_namespace(document), str(document["metadata"].get("name")))
                    found[key] = document
    return found


def _namespace(body: dict[str, Any]) -> str:
    return (body.get("metadata") or {}).get("namespace") or "default"


@dataclass
class Inputs:
    """Everything being rendered, by kind and namespace, for checks across resources."""

    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        resources: list[Resource],
        config_maps: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> Inputs:
        inputs = cls(config_maps=dict(config_maps or {}))
        for resource in resources:
            metadata = resource.body.get("metadata") or {}
            # As the API server stores it: a namespace, and no creation time offline (models
            # and gateways created "at once" are taken in name order, as the operator does).
            body = {
                **resource.body,
                "metadata": {
                    "creationTimestamp": "",
                    **metadata,
                    "namespace": _namespace(resource.body),
                },
            }
            key = (str(body.get("kind", "")), _namespace(body))
            inputs.by_kind.setdefault(key, []).append(body)
        return inputs

    def get(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return self.by_kind.get((kind, namespace), [])

    def spine(self, namespace: str) -> dict[str, Any] | None:
        return oldest(self.get("Spine", namespace))


# Offline, a Secret's values exist only once applied: a placeholder stands for each.
PLACEHOLDER = "(live Secret)"


def placeholder(name: str, keys: tuple[str, ...], field_name: str = "") -> SecretInput:
    return SecretInput(name, dict.fromkeys(keys, PLACEHOLDER), field_name)


def without_data(secret: dict[str, Any]) -> dict[str, Any]:
    """A generated Secret as `spine render` shows it: its values exist only once applied."""
    secret.pop("stringData", None)
    secret["metadata"]["annotations"] = {GENERATED: "true (data generated at apply time)"}
    return secret


def planned(result: Plan | Refusal) -> Plan:
    if isinstance(result, ReconcileError):
        raise RenderError(f"{result.reason}: {result.message}")
    return result


def login_placeholder(login: Login) -> SecretInput:
    return placeholder(login.secret, ("username", "password"))


def plan_spine_offline(body: dict[str, Any], env: Environment, inputs: Inputs) -> Plan:
    spec = SpineSpec.model_validate(body.get("spec") or {}).broker
    admin = placeholder(broker.admin_secret_name(spec), ("username", "password"))
    tls = placeholder(spec.tls.secret_name, ("tls.crt", "tls.key")) if spec.tls else None
    return planned(broker.plan_spine(broker.SpineInputs(body, env, admin, tls)))


def plan_twin_offline(spine: dict[str, Any], env: Environment, inputs: Inputs) -> Plan:
    namespace = spine["metadata"]["namespace"]
    return planned(
        twin.plan_twin(
            twin.TwinInputs(
                spine,
                inputs.get("TwinModel", namespace),
                env,
                placeholder(labels.TWIN_TOKENS_SECRET, ("write", "admin")),
                login_placeholder(twin_login()),
                publishers=twin.numbered_publishers(
                    inputs.get("Gateway", namespace),
                    inputs.get("Flow", namespace),
                    twin.flow_engine_replicas(spine),
                ),
            )
        )
    )


def plan_flows_offline(spine: dict[str, Any], env: Environment, inputs: Inputs) -> Plan:
    """The namespace's flow engine with every Flow rendered with the Spine (none: nothing)."""
    namespace = spine["metadata"]["namespace"]
    flow_inputs = flow.FlowInputs(
        spine,
        inputs.get("Flow", namespace),
        inputs.get("TwinModel", namespace),
        env,
        placeholder(labels.FLOW_ENGINE_TOKEN_SECRET, ("token",)),
        {},
        registrations=inputs.get("ServiceRegistration", namespace),
    )
    _, verdicts, logins = flow.select_flows(
        flow_inputs, SpineSpec.model_validate(spine.get("spec") or {}), namespace
    )
    refused = [
        f"Flow {name}: {v.message}" for name, v in verdicts.items() if v.login_secret is None
    ]
    if refused:
        raise RenderError("; ".join(refused))
    secrets = {
        labels.login_secret_name(login.username): login_placeholder(login) for login in logins
    }
    return planned(flow.plan_flows(dataclasses.replace(flow_inputs, logins=secrets)))


def registration_sources(
    namespace: str,
    registrations: list[dict[str, Any]],
    config_maps: dict[tuple[str, str], dict[str, Any]],
) -> tuple[dict[tuple[str, str], proxy.SpecSource], list[str]]:
    """What the operator would read for these registrations without a cluster: each API's spec
    (inline, or in a ConfigMap among the files) by (registration, api id), and the names of the
    MQTT APIs' login Secrets. Specs at URLs are read only by the operator."""
    specs: dict[tuple[str, str], proxy.SpecSource] = {}
    login_secrets: list[str] = []
    for item in registrations:
        try:
            spec = ServiceRegistrationSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue  # the plan refuses it and says why
        name = item["metadata"]["name"]
        for api in spec.apis:
            if api.spec.value is not None:
                specs[(name, api.id)] = api.spec.value.encode()
            ref = api.spec.config_map_key_ref
            config_map = config_maps.get((namespace, ref.name)) if ref else None
            if ref is not None and config_map is not None:
                value = (config_map.get("data") or {}).get(ref.key)
                if value is not None:
                    specs[(name, api.id)] = str(value).encode()
            if api.access is not None:
                login_secrets.append(labels.registration_login_secret_name(name, api.id))
    return specs, login_secrets


def refused_registrations(plan: Plan) -> list[str]:
    """The plan's refused ServiceRegistrations, each with the operator's words."""
    return [
        f"ServiceRegistration {name}: {verdict.message}"
        for name, verdict in plan.facts.get("registrations", {}).items()
        if verdict.reason != cond.RECONCILED
    ]


def plan_proxy_offline(spine: dict[str, Any], env: Environment, inputs: Inputs) -> Plan:
    """The namespace's proxy and catalog with every ServiceRegistration (and `auth`): inline
    specs and those in ConfigMaps among the files are validated; others (at URLs, in ConfigMaps
    elsewhere) are read only by the operator."""
    namespace = spine["metadata"]["namespace"]
    registrations = inputs.get("ServiceRegistration", namespace)
    specs, login_secrets = registration_sources(namespace, registrations, inputs.config_maps)
    logins = {secret: placeholder(secret, ("username", "password")) for secret in login_secrets}
    spine_spec = SpineSpec.model_validate(spine.get("spec") or {})
    tls = spine_spec.proxy.tls
    proxy_inputs = proxy.ProxyPlanInputs(
        spine,
        registrations,
        env,
        specs,
        None,
        proxy.KeysInput(),
        placeholder(labels.PROXY_TOKEN_SECRET, ("token",)),
        placeholder(labels.CATALOG_TOKEN_SECRET, ("token",)),
        placeholder(labels.TWIN_TOKENS_SECRET, ("write", "admin")),
        login_placeholder(proxy.catalog_login()),
        logins,
        placeholder(tls.secret_name, ("tls.crt", "tls.key"), "spec.proxy.tls.secretName")
        if tls
        else None,
        flows=inputs.get("Flow", namespace),
    )
    plan = planned(proxy.plan_proxy(proxy_inputs))
    refused = refused_registrations(plan)
    if refused:
        raise RenderError("; ".join(refused))
    return plan


def plan_gateway_offline(body: dict[str, Any], env: Environment, inputs: Inputs) -> Plan:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    others = [item for item in inputs.get("Gateway", namespace) if item["metadata"]["name"] != name]
    models = inputs.get("TwinModel", namespace)
    spec = GatewaySpec.model_validate(body.get("spec") or {})
    secrets = {
        mount.secret_name: placeholder(mount.secret_name, mount.keys, mount.field)
        for mount in gateway.secret_mounts(spec, env, name)
    }
    spine = inputs.spine(namespace) or {
        "metadata": {"name": "(none)", "namespace": namespace},
        "spec": {},
    }
    return planned(
        gateway.plan_gateway(
            gateway.GatewayInputs(
                body, env, spine, models, others, secrets, check_models=bool(models)
            )
        )
    )


def rendered(plan: Plan) -> list[dict[str, Any]]:
    return [*(without_data(copy.deepcopy(secret)) for secret in plan.generated), *plan.objects]


def render_spine(body: dict[str, Any], env: Environment, inputs: Inputs) -> list[dict[str, Any]]:
    """The broker, and the twin service with every TwinModel rendered with it."""
    return [
        *rendered(plan_spine_offline(body, env, inputs)),
        *rendered(plan_twin_offline(body, env, inputs)),
        *rendered(plan_flows_offline(body, env, inputs)),
        *rendered(plan_proxy_offline(body, env, inputs)),
    ]


def render_twinmodel(
    body: dict[str, Any], env: Environment, inputs: Inputs
) -> list[dict[str, Any]]:
    """No objects of its own (the Spine's twin service holds it); checked all the same."""
    TwinModelSpec.model_validate(body.get("spec") or {}).thing_model(body["metadata"]["name"])
    return []


def render_gateway(body: dict[str, Any], env: Environment, inputs: Inputs) -> list[dict[str, Any]]:
    return rendered(plan_gateway_offline(body, env, inputs))


Renderer = Callable[[dict[str, Any], Environment, Inputs], list[dict[str, Any]]]


def render_flow(body: dict[str, Any], env: Environment, inputs: Inputs) -> list[dict[str, Any]]:
    """No objects of its own (the namespace's flow engine, rendered with the Spine, runs it)."""
    FlowSpec.model_validate(body.get("spec") or {})
    return []


def render_service_registration(
    body: dict[str, Any], env: Environment, inputs: Inputs
) -> list[dict[str, Any]]:
    """No objects of its own (the namespace's proxy and catalog, rendered with the Spine)."""
    ServiceRegistrationSpec.model_validate(body.get("spec") or {})
    return []


RENDERERS: dict[str, Renderer] = {
    "Spine": render_spine,
    "TwinModel": render_twinmodel,
    "Gateway": render_gateway,
    "Flow": render_flow,
    "ServiceRegistration": render_service_registration,
}


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (config files) as `|` blocks a reviewer can read and diff, and every
    object written out in full (no YAML anchors where builders share a dict)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockStyleDumper, sort_keys=False)


def unique_resources(resources: list[Resource]) -> tuple[list[Resource], list[str]]:
    """Each object once: a copy in two files (as a folder made complete on its own has) is
    rendered once; two different objects with one name are refused, as kubectl would apply
    only the last."""
    seen: dict[tuple[str, str, str], Resource] = {}
    unique: list[Resource] = []
    problems: list[str] = []
    for resource in resources:
        metadata = resource.body.get("metadata") or {}
        key = (str(resource.body.get("kind")), _namespace(resource.body), str(metadata.get("name")))
        first = seen.setdefault(key, resource)
        if first is resource:
            unique.append(resource)
        elif first.body != resource.body:
            problems.append(f"{resource.label}: differs from the same object in {first.source}")
    return unique, problems


def render(
    resources: list[Resource],
    env: Environment,
    config_maps: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    resources, problems = unique_resources(resources)
    inputs = Inputs.of(resources, config_maps)
    for resource in resources:
        kind = resource.body.get("kind", "")
        if kind_by_name(kind) is None or kind not in RENDERERS:
            problems.append(f"{resource.label}: unknown kind {kind!r}")
            continue
        if not (resource.body.get("metadata") or {}).get("name"):
            problems.append(f"{resource.label}: metadata.name is required")
            continue
        body = next(
            item
            for item in inputs.get(kind, _namespace(resource.body))
            if item["metadata"].get("name") == resource.body["metadata"]["name"]
        )
        try:
            objects += RENDERERS[kind](body, env, inputs)
        except ValidationError as error:
            problems.append(f"{resource.label}: {describe_validation_error(error, 'spec')}")
        except RenderError as error:
            problems.append(f"{resource.label}: {error}")
    if problems:
        raise RenderError("\n".join(problems))
    return objects

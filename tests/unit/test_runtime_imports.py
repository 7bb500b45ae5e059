"""What each runtime process loads at start: libraries it does not use cost `make demo` memory.

Issue 10 holds the demo's summed RSS to 300 MiB; each library below was measured in MiB of a
runtime's RSS (benchmarks/reports/demo.md). Each check runs a fresh interpreter, because the
test process itself has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME_FOLDER = Path(__file__).resolve().parents[2] / "runtime"

ASYNCUA_STANDARD_NODESET = "asyncua.server.standard_address_space.standard_address_space_services"


def modules_loaded_by(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    # The checkout's runtime first, as pytest's own pythonpath has it, installed or not.
    path = os.pathsep.join(filter(None, [str(RUNTIME_FOLDER), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("runtime", "not_loaded"),
    [
        ("gateway", {"jsonschema", "re2", "yaml", "spine_runtime.config.twin"}),
        ("flow", {"re2", "yaml", "spine_runtime.config.twin", "aiohttp"}),
        ("twin", {"yaml"}),
    ],
)
def test_a_runtime_started_with_a_json_config_loads_only_what_it_uses(
    runtime: str, not_loaded: set[str]
) -> None:
    loaded = modules_loaded_by(f"import spine_runtime.{runtime}.main")
    assert loaded & not_loaded == set()


def test_the_simulators_opcua_server_starts_without_asyncuas_generated_nodeset() -> None:
    loaded = modules_loaded_by(
        "import asyncio\n"
        "from asyncua import Server\n"
        "from spine_runtime.sim.opcua_nodeset import TrimmedInternalServer\n"
        "asyncio.run(Server(iserver=TrimmedInternalServer()).init())"
    )
    assert "asyncua.server.internal_server" in loaded
    assert ASYNCUA_STANDARD_NODESET not in loaded


def test_the_long_lived_spine_up_holds_no_builders_nor_spec_validators() -> None:
    """`spine up` renders in a short-lived child (local/prepare.py); what supervises the run
    for hours imports only the supervisor, the screen, the probes and the broker admin."""
    loaded = modules_loaded_by("import spine_operator.cli, spine_operator.local.up")
    heavy = {
        "pydantic",
        "jsonschema",
        "cryptography",
        "yaml",
        "spine_operator.api",
        "spine_operator.render",
        "spine_operator.desired.twin",
        "spine_operator.desired.proxy",
        "spine_operator.local.stack",
        "spine_operator.local.prepare",
    }
    assert loaded & heavy == set()

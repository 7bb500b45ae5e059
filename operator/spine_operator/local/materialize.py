"""Write what a pod would mount (ConfigMap keys, Secret keys) as local files.

For `spine up` and the tests: the operator renders a workload's ConfigMap and Secrets, and these
helpers put them where the Environment's paths say a pod would find them, so the local process
reads the very config a cluster pod would. Secret files are readable by their owner only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spine_operator.desired.common import secret_values


def write_config_map(config_map: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key, value in (config_map.get("data") or {}).items():
        path = directory / key
        path.write_text(value)
        written.append(path)
    return written


def write_secret(secret: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    for key, value in secret_values(secret).items():
        path = directory / key
        path.write_text(value)
        os.chmod(path, 0o600)
        written.append(path)
    return written

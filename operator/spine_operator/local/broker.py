"""Prepare a local Mosquitto from the operator's own broker builders.

Writes the rendered mosquitto.conf and the seeded dynamic-security file into the Environment's
directories and returns the command line to start. When run as root, mosquitto drops to the user
`mosquitto`, so the data directory is handed to that user (the cluster pod runs as uid 1883 with
fsGroup instead).
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from spine_operator.api.spine import BrokerSpec
from spine_operator.build.broker import ADMIN_USERNAME, render_mosquitto_conf
from spine_operator.environment import Environment
from spine_runtime.broker.seed import seed_file


class MissingProgram(RuntimeError):
    """A program the local run needs is not installed; the message says how to get it."""


@dataclass(frozen=True)
class LocalBrokerFiles:
    config_path: Path
    dynsec_path: Path
    argv: list[str]
    admin_username: str
    admin_password: str


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise MissingProgram(
            "mosquitto is not installed: run `sudo apt-get install mosquitto` (Debian/Ubuntu)"
        )
    return found


def _hand_to_mosquitto_user(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in paths:
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
                os.chown(name, user.pw_uid, user.pw_gid)
        # the parents must be traversable for the dropped user
        parent = path.parent
        while parent != parent.parent:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
            parent = parent.parent


def prepare_local_broker(
    spec: BrokerSpec, env: Environment, namespace: str, spine_name: str, admin_password: str
) -> LocalBrokerFiles:
    """Write config and seeded logins for a local broker; idempotent across restarts."""
    config_dir, data_dir = Path(env.broker_config_dir), Path(env.broker_data_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = config_dir / "mosquitto.conf"
    config_path.write_text(render_mosquitto_conf(spec, env, namespace, spine_name))
    dynsec_path = data_dir / "dynamic-security.json"
    seed_file(dynsec_path, ADMIN_USERNAME, admin_password)
    _hand_to_mosquitto_user(config_dir, data_dir)
    return LocalBrokerFiles(
        config_path=config_path,
        dynsec_path=dynsec_path,
        argv=[mosquitto_binary(), "-c", str(config_path)],
        admin_username=ADMIN_USERNAME,
        admin_password=admin_password,
    )

"""Prepare a local Mosquitto from the operator's own broker builders.

Writes the rendered mosquitto.conf and the seeded dynamic-security file into the Environment's
directories and returns the command line to start. Started as root, mosquitto drops to the user
`mosquitto` (the cluster pod runs as uid 1883 with fsGroup instead), who then needs to reach
the data directory. With `keep_user` (what `spine up` and the tests use) a root run stays root
instead (`user root` added to the local copy of the config): handing the directory over means
opening every parent directory to that user, which changes a user's home directory, and a
pytest session that starts meanwhile closes /tmp/pytest-of-root again (mode 0700), so a broker
restarted after that cannot read its logins ("File is not readable").
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from spine_operator.api.spine import BrokerSpec
from spine_operator.desired.broker import ADMIN_USERNAME, render_mosquitto_conf
from spine_operator.environment import Environment
from spine_operator.local.programs import mosquitto_binary
from spine_runtime.broker.seed import seed_file


@dataclass(frozen=True)
class LocalBrokerFiles:
    config_path: Path
    dynsec_path: Path
    argv: list[str]
    admin_username: str
    admin_password: str


def line_buffered() -> list[str]:
    """mosquitto logs to stdout through C stdio, block-buffered into a file: the last lines
    before a crash (SIGKILL) would be lost. coreutils' stdbuf makes it flush every line."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", "-eL"] if stdbuf else []


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


# Appended to the local copy of mosquitto.conf when a root run keeps its user (see above).
KEEP_ROOT = (
    "\n# Local run (spine up, tests) started as root: stay root rather than open the state\n"
    "# directory's parents to the user mosquitto.\nuser root\n"
)


def prepare_local_broker(
    spec: BrokerSpec,
    env: Environment,
    namespace: str,
    spine_name: str,
    admin_password: str,
    keep_user: bool = False,
) -> LocalBrokerFiles:
    """Write config and seeded logins for a local broker; idempotent across restarts."""
    config_dir, data_dir = Path(env.broker_config_dir), Path(env.broker_data_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = config_dir / "mosquitto.conf"
    config = render_mosquitto_conf(spec, env, namespace, spine_name)
    stay_root = keep_user and os.geteuid() == 0
    config_path.write_text(config + KEEP_ROOT if stay_root else config)
    dynsec_path = data_dir / "dynamic-security.json"
    seed_file(dynsec_path, ADMIN_USERNAME, admin_password)
    if not stay_root:
        _hand_to_mosquitto_user(config_dir, data_dir)
    return LocalBrokerFiles(
        config_path=config_path,
        dynsec_path=dynsec_path,
        argv=[*line_buffered(), mosquitto_binary(), "-c", str(config_path)],
        admin_username=ADMIN_USERNAME,
        admin_password=admin_password,
    )

"""The programs a local run needs besides Python, found or named with how to install them.

Light on imports: `spine up` checks for them before it renders anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from spine_operator.environment import find_dynsec_plugin

# Debian installs mosquitto in /usr/sbin, which is not on an ordinary user's PATH.
MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto",)


class MissingProgram(RuntimeError):
    """A program the local run needs is not installed; the message says how to get it."""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (path for path in MOSQUITTO_FALLBACKS if Path(path).exists()), None
    )
    if found is None:
        raise MissingProgram(
            "mosquitto is not installed: run `sudo apt-get install mosquitto` (Debian/Ubuntu)"
        )
    return found


def check_programs() -> None:
    """MissingProgram naming what to install, before anything is written."""
    mosquitto_binary()
    plugin = find_dynsec_plugin()
    if not Path(plugin).exists():
        raise MissingProgram(
            f"mosquitto's dynamic-security plugin is missing ({plugin}): it comes with "
            "mosquitto 2.0 or newer; on Debian/Ubuntu run `sudo apt-get install mosquitto`"
        )

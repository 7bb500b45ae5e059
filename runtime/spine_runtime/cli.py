"""`spine-runtime <name> --config FILE`: start one data-plane process.

The container image's pods run this with the config file the operator mounts; the tests run it
as a child process the same way, and `spine up` runs `spine-runtime host --run KIND=CONFIG ...`,
several runtimes in one process (`host/main.py`). Each runtime module exposes `main(argv)`.
"""

from __future__ import annotations

import importlib
import sys

RUNTIMES = {
    "twin": "spine_runtime.twin.main",
    "gateway": "spine_runtime.gateway.main",
    "flow": "spine_runtime.flow.main",
    "catalog": "spine_runtime.catalog.main",
    "sim": "spine_runtime.sim.main",
    "broker-seed": "spine_runtime.broker.seed",
    "dev-issuer": "spine_runtime.devissuer.main",  # development only
    "host": "spine_runtime.host.main",  # several of the above in one process (spine up)
    "proxy": "spine_runtime.proxy.main",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in RUNTIMES:
        names = ", ".join(sorted(RUNTIMES))
        print(f"usage: spine-runtime {{{names}}} [options]", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(RUNTIMES[args[0]])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

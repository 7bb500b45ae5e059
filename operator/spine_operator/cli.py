"""`spine`: run the operator, render what it would create, regenerate the CRDs, run locally.

spine run [--namespace NS]... [--health-port 8080] [--metrics-port 9090]
spine render -f FILE_OR_DIR [-f ...]
spine render-crds [--check] [--dir crds]
spine up -f FILE_OR_DIR [-f ...] [--state-dir .state] [--ports fixed|auto] [--plc C=HOST:PORT]
         [--process-per-runtime] [--keep-state] [--screen auto|live|plain]
spine token [--state-dir .state] [--namespace NS] [--user NAME] [--role ROLE]... [--lifetime S]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import spine_operator.handlers  # noqa: F401 - registers the handlers

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.metrics_port:
        start_http_server(args.metrics_port)
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz"
        if args.health_port
        else None,
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    from spine_operator.environment import operator_environment
    from spine_operator.render import (
        RenderError,
        dump_yaml,
        load_config_maps,
        load_resources,
        render,
    )

    try:
        objects = render(
            load_resources(args.file), operator_environment(), load_config_maps(args.file)
        )
    except RenderError as error:
        print(f"spine render: invalid input\n{error}", file=sys.stderr)
        return 1
    sys.stdout.write(dump_yaml(objects))
    return 0


def _render_crds(args: argparse.Namespace) -> int:
    from spine_operator.crdgen import render_crd_files, write_crds

    if args.check:
        stale = [
            name
            for name, content in render_crd_files().items()
            if not (args.dir / name).exists() or (args.dir / name).read_text() != content
        ]
        if stale:
            print(
                f"spine render-crds: out of date: {', '.join(stale)}; run `spine render-crds`",
                file=sys.stderr,
            )
            return 1
        return 0
    for path in write_crds(args.dir):
        print(f"wrote {path}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from spine_operator.local.up import UpOptions, up

    return up(
        UpOptions(
            files=args.file,
            state_dir=args.state_dir,
            auto_ports=args.ports == "auto",
            keep_state=args.keep_state,
            live={"auto": None, "live": True, "plain": False}[args.screen],
            plcs=dict(args.plc),
            process_per_runtime=args.process_per_runtime,
        )
    )


def _token(args: argparse.Namespace) -> int:
    from spine_operator.local.token import TokenError, local_token

    try:
        print(local_token(args.state_dir, args.namespace, args.user, args.role, args.lifetime))
    except TokenError as error:
        print(f"spine token: {error}", file=sys.stderr)
        return 1
    return 0


def _plc_mapping(text: str) -> tuple[str, str]:
    name, separator, address = text.partition("=")
    if not separator or not name or not address:
        raise argparse.ArgumentTypeError(f"{text!r}: use CONNECTION=HOST:PORT")
    return name, address


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="spine", description="Spine: Industrial-IoT operator")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator (in a cluster or against $KUBECONFIG)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", help="watch only this namespace")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--health-port", type=int, default=8080, help="liveness /healthz (0: off)")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics (0: off)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(handler=_run)

    render = commands.add_parser("render", help="print the objects the operator would create")
    render.add_argument(
        "-f",
        "--file",
        type=Path,
        action="append",
        required=True,
        help="YAML file or directory of spine.iiot.dev resources",
    )
    render.set_defaults(handler=_render)

    local = commands.add_parser(
        "up",
        help="run the resources in the files on this machine, without a cluster",
        description="Validate the files as the operator does, render every workload's config "
        "with its builders, and run the broker, the twin, the gateways and a press simulator "
        "for each thing the gateways read (in place of its PLC) as local processes on "
        "127.0.0.1. Ctrl-C stops them all. Installs nothing: needs Debian's mosquitto.",
    )
    local.add_argument(
        "-f",
        "--file",
        type=Path,
        action="append",
        required=True,
        help="YAML file or directory of spine.iiot.dev resources (as for kubectl apply)",
    )
    local.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".state"),
        help="configs, data, logs and processes.json (default: .state)",
    )
    local.add_argument(
        "--ports",
        choices=["fixed", "auto"],
        default="fixed",
        help="fixed: the documented ports (twin 18080, broker 11883, ...); auto: free ones",
    )
    local.add_argument(
        "--plc",
        type=_plc_mapping,
        action="append",
        default=[],
        metavar="[GATEWAY/]CONNECTION=HOST:PORT",
        help="reach this PLC connection at HOST:PORT instead of a local press simulator",
    )
    local.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the state directory after Ctrl-C (and reuse it next time)",
    )
    local.add_argument(
        "--screen",
        choices=["auto", "live", "plain"],
        default="auto",
        help="live: redraw values in place; plain: print lines; auto: live on a terminal",
    )
    local.add_argument(
        "--process-per-runtime",
        action="store_true",
        help="run each Python runtime in a process of its own, as pods (default: the twins, "
        "flow engines, gateways, catalogs, proxies and issuer share one, to save memory)",
    )
    local.set_defaults(handler=_up)

    token = commands.add_parser(
        "token",
        help="print a token from the development issuer of a running `spine up`",
        description="Sign an access token with the keys of the development OIDC issuer that "
        "`spine up` runs for a Spine with `auth`, for the audience and roles claim of that "
        "Spine. For development only: anyone who can read the state directory can do this.",
    )
    token.add_argument("--state-dir", type=Path, default=Path(".state"))
    token.add_argument("--namespace", help="the namespace whose Spine (default: the only one)")
    token.add_argument("--user", default="developer", help="the token's subject (sub)")
    token.add_argument(
        "--role", action="append", default=[], help="a role the token carries (repeat)"
    )
    token.add_argument("--lifetime", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(handler=_token)

    crds = commands.add_parser("render-crds", help="regenerate crds/ from the API models")
    crds.add_argument("--dir", type=Path, default=Path("crds"))
    crds.add_argument("--check", action="store_true", help="fail if crds/ is out of date")
    crds.set_defaults(handler=_render_crds)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

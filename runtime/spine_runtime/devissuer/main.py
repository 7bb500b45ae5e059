"""`spine-runtime dev-issuer`: serve a development OIDC issuer's discovery document and JWKS.

DEVELOPMENT ONLY: every answer carries `X-Spine-Development-Only`, and the discovery document
says so too. `spine up` and the integration tests start it (`--config FILE` takes the serving
flags from a JSON file, as `spine-runtime host` runs it); `--rotate` adds a signing key (the
running server publishes it at once) and `--mint SUBJECT` prints a token, then both exit.
Exit codes: 0 after a clean stop, 1 if the port cannot be bound, 2 for bad flags or config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from spine_runtime.common.entrypoint import stop_event
from spine_runtime.common.errors import ConfigError
from spine_runtime.common.hosting import LOG_FORMAT
from spine_runtime.devissuer.keys import ALGORITHM, mint_token, public_jwks, rotate_key

log = logging.getLogger("spine_runtime.devissuer")

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"
WARNING_HEADER = "X-Spine-Development-Only"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WARNING = "development OIDC issuer: anyone with its state directory can mint tokens"


def build_app(state_dir: Path, issuer: str) -> web.Application:
    async def discovery(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer,
                "jwks_uri": issuer.rstrip("/") + JWKS_PATH,
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "spine_development_only": True,
                "spine_warning": WARNING,
            }
        )

    async def jwks(_: web.Request) -> web.Response:
        document = await asyncio.to_thread(public_jwks, state_dir)
        return web.json_response(document)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @web.middleware
    async def development_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as error:  # a 404 says it too
            error.headers[WARNING_HEADER] = WARNING
            raise
        response.headers[WARNING_HEADER] = WARNING
        return response

    app = web.Application(middlewares=[development_only])
    app.router.add_get(DISCOVERY_PATH, discovery)
    app.router.add_get(JWKS_PATH, jwks)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(state_dir: Path, host: str, port: int, issuer: str, stop: asyncio.Event) -> int:
    """Serve until `stop` is set; OSError if the port cannot be bound."""
    public_jwks(state_dir)  # makes the first key before anyone asks
    runner = web.AppRunner(build_app(state_dir, issuer), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        log.error("Cannot listen on %s:%s: %s", host, port, error)
        await runner.cleanup()
        raise
    log.warning(
        "Development OIDC issuer %s serving on %s:%s (never use it in production)",
        issuer,
        host,
        port,
    )
    await stop.wait()
    await runner.cleanup()
    log.info("Stopped")
    return 0


def read_config(config_path: Path) -> dict[str, Any]:
    """`--config FILE`: the serving flags as one JSON object (how `spine-runtime host` runs it):
    {"stateDir": ..., "host": "127.0.0.1", "port": N, "issuer": URL}; ConfigError if unusable."""
    try:
        document = json.loads(config_path.read_bytes())
    except ValueError as error:
        raise ConfigError(f"not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("stateDir"), str):
        raise ConfigError("stateDir: a directory is required")
    port = document.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("port: required, 1-65535")
    host = str(document.get("host") or "127.0.0.1")
    return {
        "state_dir": Path(document["stateDir"]),
        "host": host,
        "port": port,
        "issuer": str(document.get("issuer") or f"http://{host}:{port}"),
    }


async def run(config_path: Path, stop: asyncio.Event) -> int:
    """Serve what the config file says until `stop` is set."""
    return await serve(**read_config(config_path), stop=stop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-runtime dev-issuer",
        description="A development-only OIDC issuer: discovery and JWKS for local runs and tests.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="its keys live in STATE_DIR/dev-issuer/ (mode 0600); required without --config",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="serve with the settings of this JSON file (stateDir, host, port, issuer) instead",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="required to serve")
    parser.add_argument("--issuer", help="the issuer URL (default http://HOST:PORT)")
    parser.add_argument(
        "--rotate", action="store_true", help="add a new signing key, print its kid and exit"
    )
    parser.add_argument("--mint", metavar="SUBJECT", help="print a token for SUBJECT and exit")
    parser.add_argument("--role", action="append", default=[], help="a role of --mint (repeat)")
    parser.add_argument("--audience", default="spine", help="the audience of --mint")
    parser.add_argument("--roles-claim", default="realm_access.roles")
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds a --mint token lives")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format=LOG_FORMAT)
    if args.config is not None:
        try:
            return asyncio.run(until_signalled(run, args.config))
        except ConfigError as error:
            log.error("Cannot use the config %s: %s", args.config, error)
            return 2
        except OSError:
            return 1
    if args.state_dir is None:
        parser.error("--state-dir or --config is required")
    if args.rotate:
        print(rotate_key(args.state_dir))
        return 0
    if not 0 < args.port < 65536 and not args.mint:
        parser.error("--port is required to serve (1-65535)")
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    if args.mint:
        print(
            mint_token(
                args.state_dir,
                args.mint,
                args.role,
                args.audience,
                issuer,
                lifetime=args.lifetime,
                roles_claim=args.roles_claim,
            )
        )
        return 0

    async def serve_until_signalled() -> int:
        return await serve(args.state_dir, args.host, args.port, issuer, stop_event())

    try:
        return asyncio.run(serve_until_signalled())
    except OSError:
        return 1


async def until_signalled(
    runner: Callable[[Path, asyncio.Event], Awaitable[int]], config_path: Path
) -> int:
    return await runner(config_path, stop_event())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

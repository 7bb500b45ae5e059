"""`spine-runtime dev-issuer`: serve a development OIDC issuer's discovery document and JWKS.

DEVELOPMENT ONLY: every answer carries `X-Spine-Development-Only`, and the discovery document
says so too. `spine up` and the integration tests start it; `--rotate` adds a signing key (the
running server publishes it at once) and `--mint SUBJECT` prints a token, then both exit.
Exit codes: 0 after a clean stop, 1 if the port cannot be bound, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

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


async def serve(state_dir: Path, host: str, port: int, issuer: str) -> int:
    public_jwks(state_dir)  # makes the first key before anyone asks
    runner = web.AppRunner(build_app(state_dir, issuer), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        log.error("Cannot listen on %s:%s: %s", host, port, error)
        await runner.cleanup()
        return 1
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    log.warning(
        "Development OIDC issuer %s serving on %s:%s (never use it in production)",
        issuer,
        host,
        port,
    )
    await stop_requested.wait()
    await runner.cleanup()
    log.info("Stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-runtime dev-issuer",
        description="A development-only OIDC issuer: discovery and JWKS for local runs and tests.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="its keys live in STATE_DIR/dev-issuer/ (mode 0600)",
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
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    return asyncio.run(serve(args.state_dir, args.host, args.port, issuer))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The API gateway of a local run: the development issuer, the catalog and the proxy.

`spine up` runs them when a namespace has a ServiceRegistration or its Spine sets `auth`, from
the operator's own `plan_proxy`, as it runs the twin. A Spine's `auth.issuer` points at the
single sign-on of a plant, which a laptop does not reach: locally it is replaced by a
development issuer (`spine-runtime dev-issuer`), whose keys the proxy trusts and whose tokens
`spine token` prints. The audience and roles claim stay as written, so the routes check what
they would check in the cluster. Development only: anyone who can read the state directory can
mint tokens, and the screen says so.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spine_operator import labels
from spine_operator.api.spine import SpineSpec
from spine_operator.desired import proxy as proxy_build
from spine_operator.desired import twin as twin_build
from spine_operator.desired.logins import build_login_secret, generate_password
from spine_operator.desired.plan import SecretInput
from spine_operator.local.materialize import write_config_map, write_secret
from spine_operator.local.ports import Ports
from spine_operator.local.programs import MissingProgram
from spine_operator.local.stack import (
    HOST,
    NamespaceRun,
    http_probe,
    planned,
    read_or_make,
    runtime_argv,
    runtime_env,
)
from spine_operator.local.supervisor import Workload
from spine_operator.oidc import jwks_to_verify_keys
from spine_operator.render import RenderError, refused_registrations, registration_sources
from spine_runtime.devissuer.keys import public_jwks, signing_keys

ISSUER_CONFIG = "dev-issuer.json"


@dataclass(frozen=True)
class LocalIssuer:
    """The development issuer every namespace of one `spine up` shares."""

    url: str
    port: int
    state_dir: Path  # its keys are in state_dir/dev-issuer/


def haproxy_binary() -> str:
    """Debian's haproxy, or MissingProgram naming how to install it."""
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise MissingProgram(
        "haproxy is not installed (the proxy of ServiceRegistrations and `auth` needs it): "
        "on Debian/Ubuntu run `sudo apt-get install haproxy`"
    )


def needs_proxy(run: NamespaceRun) -> bool:
    return bool(run.plan.registration_bodies) or run.plan.spine.auth is not None


def prepare_issuer(state_dir: Path, ports: Ports, log_path: Path) -> tuple[LocalIssuer, Workload]:
    """The issuer's signing key (made now, so the proxy's config can name it) and its process."""
    port = ports.take("issuer")
    issuer = LocalIssuer(f"http://{HOST}:{port}", port, state_dir)
    signing_keys(state_dir)  # makes the first key if there is none
    # Its serving flags as a config file, so `spine-runtime host` runs it like the others.
    config_path = state_dir / ISSUER_CONFIG
    config_path.write_text(
        json.dumps({"stateDir": str(state_dir), "host": HOST, "port": port, "issuer": issuer.url})
    )
    argv = runtime_argv(["spine-runtime", "dev-issuer", "--config", str(config_path)])
    workload = Workload(
        name="dev issuer",
        role="issuer",
        argv=argv,
        log_path=log_path,
        probe=http_probe(f"{issuer.url}/.well-known/openid-configuration"),
        address=issuer.url,
        namespace="",
        env=runtime_env(),
    )
    return issuer, workload


def local_spine(body: dict[str, Any], issuer: LocalIssuer | None) -> dict[str, Any]:
    """The Spine with its `auth` pointed at the development issuer (keys by discovery)."""
    auth = (body.get("spec") or {}).get("auth")
    if auth is None or issuer is None:
        return body
    local_auth = {key: value for key, value in auth.items() if key != "jwksUri"}
    local_auth["issuer"] = issuer.url
    return {**body, "spec": {**body["spec"], "auth": local_auth}}


def issuer_keys(spec: SpineSpec, issuer: LocalIssuer | None) -> proxy_build.KeysInput:
    """The issuer's public keys, as the operator's refresh would convert them."""
    if spec.auth is None or issuer is None:
        return proxy_build.KeysInput()
    keys = jwks_to_verify_keys(public_jwks(issuer.state_dir), spec.auth.algorithms)
    return proxy_build.KeysInput(keys=tuple(keys), fetched_at=time.time())


def prepare_proxy(
    run: NamespaceRun, issuer: LocalIssuer | None, log_dir: Path, name_prefix: str
) -> list[Workload]:
    """The catalog's and the proxy's Secrets and configs as files, their logins, and their
    processes; RenderError if the operator would refuse a registration."""
    plan, env, namespace = run.plan, run.env, run.namespace
    spine_body = local_spine(plan.spine_body, issuer)
    spec = SpineSpec.model_validate(spine_body.get("spec") or {})
    if spec.proxy.tls is not None:
        raise RenderError(
            f"{plan.source}: spine up serves the proxy over plain HTTP on {HOST}; "
            "remove spec.proxy.tls to run it locally"
        )
    env = env.replace(haproxy_binary=haproxy_binary())
    proxy_secrets, catalog_secrets = Path(env.proxy_secrets_dir), Path(env.catalog_secrets_dir)
    proxy_token = {
        "token": read_or_make(proxy_secrets / "token" / "token", twin_build.generate_token)
    }
    write_secret({"stringData": proxy_token}, proxy_secrets / "token")
    catalog_token = {
        "token": read_or_make(catalog_secrets / "token" / "token", twin_build.generate_token)
    }
    write_secret({"stringData": catalog_token}, catalog_secrets / "token")
    catalog_login = proxy_build.catalog_login()
    catalog_password = read_or_make(catalog_secrets / "mqtt" / "password", generate_password)
    write_secret(
        build_login_secret(namespace, catalog_login, plan.spine_name, env, catalog_password),
        catalog_secrets / "mqtt",
    )
    tokens_dir = Path(env.twin_secrets_dir) / "tokens"
    twin_tokens = {key: (tokens_dir / key).read_text().strip() for key in ("write", "admin")}
    specs, login_secrets = registration_sources(
        namespace, plan.registration_bodies, plan.config_maps
    )
    api_passwords: dict[str, str] = {}
    for secret in login_secrets:
        api_passwords[secret] = read_or_make(
            run.state_dir / "registrations" / secret / "password", generate_password
        )
    inputs = proxy_build.ProxyPlanInputs(
        spine_body,
        plan.registration_bodies,
        env,
        specs,
        None,  # no Services locally: a serviceRef is reached on 127.0.0.1 at its port
        issuer_keys(spec, issuer),
        SecretInput(labels.PROXY_TOKEN_SECRET, proxy_token),
        SecretInput(labels.CATALOG_TOKEN_SECRET, catalog_token),
        SecretInput(labels.TWIN_TOKENS_SECRET, twin_tokens),
        SecretInput(catalog_login.secret, {"password": catalog_password}),
        {
            secret: SecretInput(secret, {"password": password})
            for secret, password in api_passwords.items()
        },
        flows=plan.flow_bodies,  # an exposed http source gets its route, as in a cluster
    )
    proxy_plan = planned(proxy_build.plan_proxy(inputs), plan.source)
    refused = refused_registrations(proxy_plan)
    if refused:
        raise RenderError(f"{plan.source}: " + "; ".join(refused))
    run.logins.append((catalog_login, catalog_password))
    for login in proxy_plan.logins:
        if login.secret in api_passwords:
            password = api_passwords[login.secret]
            run.logins.append((login, password))
            write_secret(
                build_login_secret(namespace, login, plan.spine_name, env, password),
                run.state_dir / "registrations" / login.secret,
            )
    by_name = {(obj["kind"], obj["metadata"]["name"]): obj for obj in proxy_plan.objects}
    config_maps = {name: obj for (kind, name), obj in by_name.items() if kind == "ConfigMap"}
    write_config_map(config_maps[labels.CATALOG_CONFIG_NAME], Path(env.catalog_config_dir))
    write_config_map(config_maps[labels.PROXY_CONFIG_NAME], Path(env.proxy_config_dir))
    Path(env.catalog_data_dir).mkdir(parents=True, exist_ok=True)
    Path(env.proxy_run_dir).mkdir(parents=True, exist_ok=True)
    commands = {
        name: obj["spec"]["template"]["spec"]["containers"][0]["command"]
        for (kind, name), obj in by_name.items()
        if kind == "Deployment"
    }
    public_url = env.proxy_public_url(namespace, tls=False)
    catalog_url, proxy_admin_url = env.catalog_url(namespace), env.proxy_url(namespace)
    run.details["proxy"] = {
        "url": public_url,
        "catalog": f"{public_url}{proxy_build.CATALOG_PATH}/",
        "twin": f"{public_url}{proxy_build.TWIN_PATH}" if spec.auth is not None else None,
        "status": f"{proxy_admin_url}/status",
        "issuer": issuer.url if issuer is not None and spec.auth is not None else None,
        "issuerStateDir": str(issuer.state_dir.resolve()) if issuer is not None else None,
        "audience": spec.auth.audience[0] if spec.auth is not None else None,
        "rolesClaim": spec.auth.roles_claim if spec.auth is not None else None,
        "twinReadRole": spec.auth.twin.read_roles[0] if spec.auth is not None else None,
        "registrations": sorted(item["metadata"]["name"] for item in plan.registration_bodies),
        "loginSecrets": {
            secret: str((run.state_dir / "registrations" / secret).resolve())
            for secret in api_passwords
        },
    }
    proxy_env = runtime_env()
    if spec.auth is not None:
        proxy_env[proxy_build.TWIN_TOKEN_ENV] = twin_tokens["write"]
    return [
        Workload(
            name=f"{name_prefix}catalog",
            role="catalog",
            argv=runtime_argv(commands[labels.CATALOG_NAME]),
            log_path=log_dir / f"{namespace}-catalog.log",
            probe=http_probe(f"{catalog_url}/healthz"),
            address=catalog_url,
            namespace=namespace,
            env=runtime_env(),
        ),
        Workload(
            name=f"{name_prefix}proxy",
            role="proxy",
            argv=runtime_argv(commands[labels.PROXY_NAME]),
            log_path=log_dir / f"{namespace}-proxy.log",
            probe=http_probe(f"{proxy_admin_url}/healthz"),
            address=public_url,
            namespace=namespace,
            env=proxy_env,
        ),
    ]

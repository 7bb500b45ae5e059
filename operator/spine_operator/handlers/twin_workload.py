"""The Spine's twin service, and the status of every TwinModel that feeds it.

Called by the Spine reconcile (which owns the twin workload) and, through it, whenever a
TwinModel changes: all TwinModels of the namespace are gathered with the pure
`select_twin_models`, rendered into one config, applied and pushed to the running twin. The
same selection decides each TwinModel's status, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.kinds import API_VERSION, TWINMODEL
from spine_operator.api.spine import SpineSpec
from spine_operator.context import CONTEXT
from spine_operator.desired import twin as twin_build
from spine_operator.desired.broker import keep_claim_templates
from spine_operator.desired.common import secret_data_digest, secret_values
from spine_operator.desired.logins import twin_login
from spine_operator.external import PushResult, push_config
from spine_operator.k8s import Kubernetes, resource_path


@dataclass
class TwinOutcome:
    things: int
    push: PushResult
    secret_digests: dict[str, str] = field(default_factory=dict)


async def list_twin_models(k8s: Kubernetes, namespace: str) -> list[dict[str, Any]]:
    listing = await k8s.request("GET", resource_path(API_VERSION, TWINMODEL.kind, namespace))
    return list(listing.get("items") or [])


async def sync_twin(k8s: Kubernetes, body: dict[str, Any], spec: SpineSpec) -> TwinOutcome:
    """Apply the twin workload with every accepted TwinModel, and push its config."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    env = CONTEXT.environment
    selection = twin_build.select_twin_models(await list_twin_models(k8s, namespace))
    tokens = await k8s.get_or_create(
        twin_build.build_tokens_secret(
            namespace, name, twin_build.generate_token(), twin_build.generate_token()
        ),
        owner=body,
    )
    token_values = secret_values(tokens)
    login_secret_name = await CONTEXT.broker_access.ensure_login(
        namespace, twin_login(), body, wait=False
    )
    login_secret = await k8s.get("v1", "Secret", namespace, login_secret_name)
    digests = {
        labels.TWIN_TOKENS_SECRET: secret_data_digest(token_values),
        login_secret_name: secret_data_digest(secret_values(login_secret)),
    }
    config = twin_build.twin_config(spec, env, namespace, selection.accepted)
    objects = twin_build.build_twin(
        spec, env, namespace, name, config, tuple(digests.values()), login_secret_name
    )
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.TWIN_NAME)
    statefulset = keep_claim_templates(objects.statefulset, existing)
    for child in [objects.config_map, objects.service, statefulset, objects.network_policy]:
        await k8s.apply(child, owner=body)
    push = await push_config(
        env.twin_url(namespace), token_values.get("admin", ""), twin_build.config_document(config)
    )
    await refresh_twinmodel_statuses(k8s, namespace, selection, None, env.twin_url(namespace))
    return TwinOutcome(len(config.things), push, digests)


async def refresh_twinmodel_statuses(
    k8s: Kubernetes,
    namespace: str,
    selection: twin_build.ModelSelection | None,
    spine_problem: tuple[str, str] | None,
    twin_api: str | None,
) -> None:
    """Write each TwinModel's status: in the twin, refused (and why), or waiting for a Spine."""
    items = await list_twin_models(k8s, namespace)
    if selection is None:
        selection = twin_build.select_twin_models(items)
    accepted = dict(selection.accepted)
    for item in items:
        model_name = item["metadata"]["name"]
        generation = int(item["metadata"].get("generation") or 0)
        things: int | None = None
        if model_name in selection.rejected:
            reason, message = selection.rejected[model_name]
        elif spine_problem is not None:
            reason, message = spine_problem
        elif model_name in accepted:
            things = len(accepted[model_name].things)
            reason = cond.RECONCILED
            message = f"{things} things in the twin service at {twin_api}"
        else:
            continue
        ready = reason == cond.RECONCILED
        status = item.get("status") or {}
        new_status: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": cond.merge_conditions(
                status.get("conditions"),
                [cond.condition(cond.READY, ready, reason, message, generation)],
            ),
            "things": things,
            "version": accepted[model_name].version if model_name in accepted else None,
            "api": twin_api if ready else None,
        }
        CONTEXT.metrics.set_ready(TWINMODEL.kind, namespace, model_name, ready)
        await k8s.patch_status(TWINMODEL.kind, namespace, model_name, status, new_status)

"""kopf wiring for Secrets: a Secret that a resource uses appeared or changed, so reconcile it.

One handler for every kind: each kind's index maps (namespace, Secret name) to the resources
that use it; a new digest rolls their pods through the restart checksum. A resource whose last
reconcile already saw this value is left alone, and no Secret can fix an invalid spec.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import conditions as cond
from spine_operator.desired.common import secret_data_digest, secret_values
from spine_operator.reconcile.core import Outcome
from spine_operator.reconcile.kinds import RECONCILERS

BY_KIND = {reconciler.kind: reconciler for reconciler in RECONCILERS}


def secret_is_news(outcome: Outcome | None, secret: str, digest: str | None) -> bool:
    """Whether a Secret event can change what the last reconcile of a resource found."""
    if outcome is None:
        return True  # a first reconcile may be running with the previous value: run again
    if outcome.error is not None:
        return outcome.error.reason != cond.INVALID_SPEC
    assert outcome.plan is not None
    return outcome.plan.secret_digests.get(secret) != digest


@kopf.on.event("v1", "secrets")
async def secret_changed(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    if not namespace or type is None:
        return  # the initial listing: every resource's resume handler runs with these values
    digest = secret_data_digest(secret_values(dict(body))) if type != "DELETED" else None
    users = set(kwargs["gateway_secrets"].get((namespace, name), []))
    for spine_users in kwargs["spine_secrets"].get((namespace, name), []):
        users.update(spine_users)  # one Secret of a Spine's may feed several aggregates
    for kind, user in sorted(users):
        reconciler = BY_KIND[kind]
        if not secret_is_news(reconciler.outcomes.get((namespace, user)), name, digest):
            continue
        logger.info("Secret %s changed: reconciling %s %s/%s", name, kind, namespace, user)
        await reconciler.reconcile_quietly(namespace, user, logger)

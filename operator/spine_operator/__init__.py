"""Spine's control plane: a kopf operator that turns `spine.iiot.dev` resources into workloads.

Importing this package registers nothing; `spine_operator.handlers` registers the kopf handlers
(`spine run` imports it). The pure core (api, build, conditions, labels) imports neither kopf,
the kubernetes client nor httpx, so `spine render` and the unit tests stay offline and fast.
"""

__version__ = "0.1.0"

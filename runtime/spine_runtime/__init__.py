"""Spine's data plane: the gateway, flow engine, twin service and catalog processes.

Each runtime reads a config file that the operator renders (models in `spine_runtime.config`)
and never talks to the Kubernetes API. `spine-runtime <name>` starts one (see `cli.py`).
"""

__version__ = "0.1.0"

"""The twin service: every machine's reported and desired state, validated against its model.

The Eclipse-Ditto role in Spine. `main.py` starts it (`spine-runtime twin --config FILE`); the
README in this folder documents the thing JSON, the HTTP API, the search subset and the metrics.
"""

"""Pydantic models of each runtime's config file: the contract between operator and data plane.

The operator imports these to build configs; the runtimes import them to read configs. One
module per runtime (`twin.py`, `gateway.py`, ...), sharing the pieces in `base.py`.
"""

"""A simulated hydraulic press PLC serving one live state over Modbus TCP, OPC UA and S7.

`spine-runtime sim` (see `main.py`) runs it for `make demo`, the gateway's integration tests
and the benchmarks. `physics.py` is the pure process model, `addressmap.py` the stable address
map of every protocol (also in README.md), `app.py` the process and its HTTP test API.
"""

"""The gateway agent: reads PLC tags and publishes them as twin updates, losing nothing.

`spine-runtime gateway --config FILE` runs it (see `main.py`); the operator renders the config
(`spine_runtime.config.gateway`). Pure parts (addresses, codec, planner, values, protocol) have
no I/O; drivers, the disk queue and the MQTT link do. README.md in this folder is the user guide.
"""

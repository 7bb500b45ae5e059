"""The flow engine (`spine-runtime flow`): every Flow of a namespace in one asyncio process.

`expressions` (JSONata) and `units` are pure and imported by the config model; the rest is the
engine: `main` wires config delivery, `engine` runs the flows, `link` is the MQTT client.
"""

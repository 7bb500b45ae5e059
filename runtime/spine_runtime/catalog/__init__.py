"""The catalog: a LinkSmart Service Catalog compatible registry of the namespace's services.

`main.py` starts it (`spine-runtime catalog --config FILE`). Entries come from the config
document (owned by ServiceRegistrations) and from authorised writes (services outside the
cluster, with a ttl); changes are announced on MQTT and owned entries are probed. The README's
"Catalog" section documents the API and where it differs from LinkSmart's.
"""

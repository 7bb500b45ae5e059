"""Run Spine's workloads as local processes from the configs the operator's builders render.

Used by `spine up` and the tests: the very files a cluster would get are written to a state
directory and the same programs (Debian's mosquitto, `spine-runtime ...`) are started on them.
"""

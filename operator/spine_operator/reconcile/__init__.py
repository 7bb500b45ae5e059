"""The reconcile core every kind uses (`core.py`), what each kind gathers (`gather.py`), and the
table of kinds (`kinds.py`) that handlers and the status poller use."""

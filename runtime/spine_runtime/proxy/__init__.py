"""The proxy supervisor: runs HAProxy master-worker with the config the operator pushes."""

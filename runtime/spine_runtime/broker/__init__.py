"""Helpers that run beside the namespace's Mosquitto broker (in its pod's init container)."""

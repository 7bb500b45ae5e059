"""Pure desired-state builders: spec in, Kubernetes objects and config files out. No I/O."""

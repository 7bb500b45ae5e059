"""`spine-runtime host`: several runtimes in one process (local runs)."""

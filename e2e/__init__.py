"""End-to-end tests: the press line from examples/ to data, locally and on a real cluster."""

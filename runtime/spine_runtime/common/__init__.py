"""What every runtime shares: its HTTP server (health, metrics, status, config push), configs."""

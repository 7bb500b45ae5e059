"""The pinned Go module of the control-plane test programs, and the script that builds them."""

"""pipeline/run/: see README, "Code layout"."""

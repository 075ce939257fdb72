"""pipeline/inputs/: see README, "Code layout"."""

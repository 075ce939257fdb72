"""pipeline/dataset/: see README, "Code layout"."""

"""pipeline/viewing/: see README, "Code layout"."""

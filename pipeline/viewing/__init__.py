"""Looking at results: the quicklook PNG and the HTML map viewer.

May import run/ and inputs/ (tests/test_layout.py); map: README, "Code layout"."""

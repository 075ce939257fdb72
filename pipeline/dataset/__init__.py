"""Training data: EO and SAR scenes -> a U-GAT-IT tile dataset.

May import run/ and inputs/ (tests/test_layout.py); map: README, "Code layout"."""

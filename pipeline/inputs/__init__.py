"""What comes in: input forms, products, catalogs, fingerprints, radiometry.

Imports no other wing (tests/test_layout.py); map: README, "Code layout"."""

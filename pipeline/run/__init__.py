"""A scene run and a directory run: checks, plan, Dask tasks, blend, COG, manifests, STAC.

Imports inputs/, never dataset/ or viewing/ (tests/test_layout.py); map: README, "Code layout"."""

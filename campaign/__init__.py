"""Campaigns: a spec turned into stages of keyed tasks, run over Dask into one Zarr store."""

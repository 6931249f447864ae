"""Active learning, the science part: initial data, committee training as a task, exploration
with the batched MD engine, trust-window selection. No dask here (campaign/ drives it)."""

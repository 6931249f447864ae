"""The science as plain typed functions.

Nothing here imports dask, the campaign runner or the schedulers: every function runs in a
notebook with no cluster. Inputs are ASE ``Atoms``/numpy arrays plus a frozen settings object
and, where anything is random, an explicit seed.
"""

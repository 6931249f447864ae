"""Monte Carlo on site lattices driven by a potential: batched chains, swap and cell moves,
Metropolis with the NPT term, energies updated only near the moved sites (no dask here)."""

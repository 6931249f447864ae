"""Behler–Parrinello neural-network potentials in torch: descriptors, models, committees,
short-range repulsion, training. Plain functions and modules; no cluster needed."""

"""Properties that validate a potential against its labeler: structure, elasticity, equations of
state, phonons, point defects, dimer curves. Each takes any ASE calculator, so a potential and the
labeler go through the same arithmetic."""

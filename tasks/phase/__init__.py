"""The phase diagram of a lattice with disorder (Cr/vacancy on the NiAs metal sites): cluster
expansions, enumeration, ranking by a potential, convex hulls. icet does the lattice work."""

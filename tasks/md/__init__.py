"""Batched molecular dynamics and relaxation: many systems in one state, pure step functions."""

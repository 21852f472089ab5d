"""Pruning of weights and units."""

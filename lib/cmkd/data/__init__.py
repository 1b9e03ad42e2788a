"""Datasets: the MVD synthetic generator (and, later, embedded and real datasets)."""

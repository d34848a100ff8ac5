"""One module per public collection; each registers a ``prepare`` function on import.

They are imported by [`modfuse.datasets.preparation.prepare()`][modfuse.datasets.preparation.prepare] on first use only.
"""

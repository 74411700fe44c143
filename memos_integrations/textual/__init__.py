"""Plaintext memory: the SQLite source of truth, the vector index, the graph, embedders, readers and search."""

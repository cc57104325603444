"""Tablet e-learning cache: signed catalog, verified resumable transfer, content cache, xAPI records."""

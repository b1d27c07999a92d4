"""Turning texts into base embeddings once: the on-disk cache, lookup modules that stand in for a frozen base, and
the encoding precision."""

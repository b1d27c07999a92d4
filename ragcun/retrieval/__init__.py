"""Serving a Gaussian embedder: the L2 retriever, its index stores and its on-disk format."""

from ragcun.retrieval.retriever import GaussianRetriever, Hit

__all__ = ["GaussianRetriever", "Hit"]

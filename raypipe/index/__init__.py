"""Approximate nearest-neighbour retrieval: an hnswlib index keyed by string item ids."""
from raypipe.index.hnsw import (
    FORMAT_VERSION,
    SPACES,
    HNSWIndex,
    IndexFormatError,
    IndexFullError,
    exact_search,
)

__all__ = ["FORMAT_VERSION", "SPACES", "HNSWIndex", "IndexFormatError", "IndexFullError", "exact_search"]

"""ragplane retriever service."""

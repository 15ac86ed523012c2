"""ragplane embedder service."""

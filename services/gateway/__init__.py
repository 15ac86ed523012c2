"""ragplane gateway service."""

"""ragplane generator service."""

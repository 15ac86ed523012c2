"""Retrieval and answer quality of a running stack, through the public API."""

"""ragplane benchmarks: each a ratio against a baseline measured side by side in one run."""

"""Operator tools: the CLI, the local stack launcher, Milvus Lite, the demo, and the
helpers that start and stop their processes."""

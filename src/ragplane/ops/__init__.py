"""Operator tools: the CLI, the local stack launcher and the demo."""

"""The one-machine stack's process launcher (src/ragplane/ops/stack.py)."""

from __future__ import annotations

import os
import sys

from ragplane.ops import stack


def test_the_generator_runs_below_the_gateways_priority(tmp_path, monkeypatch):
    # A sleeping Python stands in for each service: what is checked is the launcher.
    monkeypatch.setattr(
        stack, "command", lambda layout, name: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    layout = stack.StackLayout(state_dir=tmp_path)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    launched = {name: stack.launch(layout, name) for name in ("generator", "gateway")}
    try:
        assert os.getpriority(os.PRIO_PROCESS, launched["generator"].pid) == min(
            base + stack.NICENESS["generator"], 19
        )
        assert os.getpriority(os.PRIO_PROCESS, launched["gateway"].pid) == base
        assert layout.pid_file("generator").read_text() == str(launched["generator"].pid)
    finally:
        for proc in launched.values():
            proc.popen.kill()
            proc.popen.wait()

"""How many forward passes the embedder runs at once: one per usable core on a CPU (CPU
affinity capped by a cgroup v2 limit), one on a GPU."""

from __future__ import annotations

import os
from pathlib import Path

from ragplane.embedder.model import forward_workers_for, usable_cores


def test_a_gpu_runs_one_pass_at_a_time():
    assert forward_workers_for("cuda:0") == 1


def test_a_cpu_runs_one_pass_per_usable_core():
    assert forward_workers_for("cpu") == usable_cores()


def test_a_cgroup_limit_caps_the_affinity(tmp_path: Path):
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == cores
    cpu_max.write_text("150000 100000\n")  # limits.cpu: 1500m rounds up to 2
    assert usable_cores(cpu_max) == min(cores, 2)
    cpu_max.write_text("10000 100000\n")  # 100m: still one
    assert usable_cores(cpu_max) == 1
    assert usable_cores(tmp_path / "absent") == cores
    cpu_max.write_text("garbage\n")
    assert usable_cores(cpu_max) == cores

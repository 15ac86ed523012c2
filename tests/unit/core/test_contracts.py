"""The protos are lint-clean and the committed generated code matches them."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from tools.protogen import generate


def test_generated_code_is_up_to_date(tmp_path: Path):
    generate(tmp_path)
    fresh = tmp_path / "ragplane" / "v1"
    committed = ROOT / "src" / "ragplane" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code, run `make proto`: {mismatch}"


def buf() -> str | None:
    local = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "buf"
    return str(local) if local.exists() else shutil.which("buf")


@pytest.mark.skipif(buf() is None and not os.environ.get("CI"), reason="buf is not installed")
def test_protos_pass_buf_lint():
    assert buf() is not None, ".ci/run installs buf from npm @bufbuild/buf"
    result = subprocess.run([buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

"""Every alert rule is valid and behaves as its promtool unit tests say."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT

RULES = ROOT / "charts" / "ragplane" / "files" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
    return subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_rule_has_a_unit_test():
    rules = (RULES / "alerts.yaml").read_text()
    tests = (RULES / "alerts.test.yaml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert names
    untested = [n for n in names if f"alertname: {n}" not in tests]
    assert not untested


def test_alert_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr

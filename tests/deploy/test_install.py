"""Each service installs with its own extra alone: in a fresh virtual environment,
`pip install 'ragplane[gateway]'` (or `[retriever]`) brings neither torch nor vLLM, and the
service's console script starts, reports SERVING over gRPC health, and exits 0 on SIGTERM.

Both services start without the services behind them: the gateway connects lazily, and
the retriever answers UNAVAILABLE until Milvus is up (none runs here). A few minutes each:
pip resolves and installs from the machine's configured indexes; skipped, with the reason,
when pip cannot reach one."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ragplane.ops.processes import free_ports, start_process
from tests.support import ROOT

INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 120
# What the Dockerfile copies in to install the project: enough to build it.
SOURCES = ("pyproject.toml", "README.md", "src", "services")
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.egg-info")
HEAVY = ("torch", "vllm", "transformers", "sentence_transformers")
# pip's words when an index is out of reach (rather than a requirement that cannot be met).
UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Could not fetch URL",
    "ConnectTimeoutError",
    "ProxyError",
)


def install(extra: str, workdir: Path) -> Path:
    """A fresh venv with the project and `extra` installed from a copy of its sources;
    returns the venv's bin folder."""
    source = workdir / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=NOT_SOURCES)
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    result = subprocess.run(
        [*pip, "install", "--retries", "2", "--timeout", "60", f"{source}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(marker in output for marker in UNREACHABLE):
            pytest.skip(f"pip cannot reach a package index: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip install .[{extra}] failed:\n{output[-4000:]}")
    return venv / "bin"


def importable(python: Path, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` the venv's Python finds (without importing them)."""
    code = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    out = subprocess.run(
        [str(python), "-c", code, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=clean_env(),
    )
    return out.stdout.split()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point the venv at the repository's code or
    send spans anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RAGPLANE_"))}
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return {**env, **extra}


@pytest.fixture(scope="module", params=["gateway", "retriever"])
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    extra = request.param
    workdir = tmp_path_factory.mktemp(f"install-{extra}")
    return extra, install(extra, workdir), workdir


def test_a_service_installs_without_torch_or_vllm(installed):
    extra, bin_dir, _ = installed
    assert importable(bin_dir / "python", HEAVY) == []
    assert importable(bin_dir / "python", (f"ragplane.{extra}.server",)) == [
        f"ragplane.{extra}.server"
    ]


async def test_the_installed_service_serves_and_stops_on_sigterm(installed):
    extra, bin_dir, workdir = installed
    grpc_port, metrics_port, other_port, milvus_port = free_ports(4)
    settings = {
        f"RAGPLANE_{extra.upper()}_ADDR": f"127.0.0.1:{grpc_port}",
        f"RAGPLANE_{extra.upper()}_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "RAGPLANE_STATE_DIR": str(workdir / "state"),
        "RAGPLANE_SHUTDOWN_GRACE_SECONDS": "1",
    }
    if extra == "gateway":
        settings["RAGPLANE_GATEWAY_HTTP_ADDR"] = f"127.0.0.1:{other_port}"
        settings["RAGPLANE_GATEWAY_AUTH"] = "disabled"  # no keys file: it only starts
    else:
        # Nothing listens there: the retriever serves and reports Milvus UNAVAILABLE.
        settings["RAGPLANE_MILVUS_URI"] = f"http://127.0.0.1:{milvus_port}"
        settings["RAGPLANE_MILVUS_TIMEOUT_SECONDS"] = "2"
        settings["RAGPLANE_RERANKER"] = "none"
    proc = start_process(
        [str(bin_dir / f"ragplane-{extra}")],
        workdir / f"{extra}.log",
        env=clean_env(**settings),
        name=f"installed {extra}",
        cwd=workdir,
    )
    try:
        await proc.wait_serving(f"127.0.0.1:{grpc_port}", within_s=START_TIMEOUT_S)
    finally:
        code = await asyncio.to_thread(proc.stop, 30)
    assert code == 0, proc.tail()

"""`python -m tools.typecheck [MYPY ARGS]` (`make lint`): mypy over the package as it
installs, plus bench/, evals/ and tools/.

The source tree does not have the installed layout (ragplane.embedder lives in
services/embedder), and mypy cannot follow the import hook of an editable install, so this
mirrors pyproject's package-dir mapping as a tree of file symlinks under build/typecheck,
runs mypy on it ([tool.mypy] in pyproject.toml) and writes mypy's paths back as the
source files'. Its exit code is mypy's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"
# Checked beside the package: repository-only code that imports it.
REPO_PACKAGES = ("bench", "evals", "tools")


def source_dir(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools takes a package's modules from: the longest mapped prefix."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[cut:])
    return ROOT / Path(*parts)


def link_tree() -> dict[str, str]:
    """Builds TREE afresh; returns each linked path's text as mypy prints it -> the source's."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shutil.rmtree(TREE, ignore_errors=True)
    paths: dict[str, str] = {}
    for package in setuptools["packages"]:
        source = source_dir(package, setuptools.get("package-dir", {}))
        target = TREE / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(source.glob("*.py*")):
            if file.suffix in (".py", ".pyi"):
                (target / file.name).symlink_to(file)
                paths[str((target / file.name).relative_to(ROOT))] = str(file.relative_to(ROOT))
    return paths


def main(argv: list[str]) -> int:
    paths = link_tree()
    packages = [arg for name in ("ragplane", *REPO_PACKAGES) for arg in ("-p", name)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *packages, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    for line in result.stdout.splitlines():
        path, sep, rest = line.partition(":")
        print(paths.get(path, path) + sep + rest)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

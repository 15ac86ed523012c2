"""`python tools/image_requirements.py EXTRA [EXTRA ...]`: the requirements (one a line) of
ragplane's core and of the given extras, from pyproject.toml, with the extras' references
to ragplane[...] expanded.

The Dockerfile installs these before it copies the sources, so that a source change
rebuilds only the project's own small layer and the dependency layers stay cached. Runs
on a bare Python 3.11 (tomllib only): nothing of the project is installed yet."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
SELF = re.compile(r"^ragplane\[(?P<extras>[^\]]+)\]$")


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The core dependencies, then each extra's, expanded, once each."""
    optional = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            sys.exit(f"image_requirements: no extra {extra!r} in pyproject.toml")
        seen.add(extra)
        for requirement in optional[extra]:
            nested = SELF.match(requirement.replace(" ", ""))
            if nested:
                for name in nested["extras"].split(","):
                    add(name)
            else:
                found.append(requirement)

    for extra in extras:
        add(extra)
    return list(dict.fromkeys(found))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    print("\n".join(requirements(project, argv)))


if __name__ == "__main__":
    main(sys.argv[1:])

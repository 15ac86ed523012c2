"""`ragplane keys create --tenant T --role R | list | revoke ID`: the gateway's API keys,
in a keys file (default: the local stack's, <state>/keys.json; --file for another, such as
the source of a Kubernetes Secret). A running gateway reads the file again within a
second of a change. A key is printed once, when it is created; the file keeps its hash."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ragplane import keys
from ragplane.config import state_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("keys", help="create, list or revoke the gateway's API keys")
    actions = cmd.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key; printed once, never again")
    create.add_argument("--tenant", default=keys.LOCAL_TENANT, help="its tenant (default: local)")
    create.add_argument(
        "--role",
        required=True,
        choices=[r.label for r in keys.Role],
        help="reader: ask, search; writer: also ingest, delete, jobs; admin: also collections",
    )
    create.add_argument("--name", default="", help="a note to tell keys apart")
    listing = actions.add_parser("list", help="every key: id, tenant, role, when, revoked")
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id", help="the key's id (`keys list`)")
    for parser in (create, listing, revoke):
        parser.add_argument(
            "--file", type=Path, help="the keys file (default: <state dir>/keys.json)"
        )


def run(args: argparse.Namespace) -> int:
    path: Path = args.file or state_dir() / keys.KEYS_FILE
    try:
        if args.action == "create":
            key, record = keys.create_key(
                path, args.tenant, keys.Role.parse(args.role), name=args.name
            )
            sys.stderr.write(
                f"created key {record.id} ({record.role}, tenant {record.tenant}) in {path}; "
                "it is shown only now:\n"
            )
            print(key)
            return 0
        if args.action == "revoke":
            record = keys.revoke_key(path, args.id)
            print(f"revoked {record.id} (tenant {record.tenant}) at {record.revoked}")
            return 0
        _list(keys.read_keys(path), args.json)
        return 0
    except FileNotFoundError:
        sys.stderr.write(f"ragplane: no keys file at {path} (`ragplane up` or `keys create`)\n")
    except KeyError:
        sys.stderr.write(f"ragplane: no key {args.id!r} in {path}\n")
    except ValueError as exc:
        sys.stderr.write(f"ragplane: {exc}\n")
    return 1


def _list(records: list[keys.KeyRecord], as_json: bool) -> None:
    for r in records:
        shown = {k: v for k, v in asdict(r).items() if k not in ("salt", "hash")}
        if as_json:
            print(json.dumps(shown))
        else:
            state = f"revoked {r.revoked}" if r.revoked else "active"
            print(f"{r.id}  {r.tenant:<12} {r.role:<7} {r.created}  {state}  {r.name}")

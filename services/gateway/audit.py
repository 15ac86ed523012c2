"""The audit log: one JSON line on the `ragplane.audit` logger for every write and admin
call, on either door, whatever its outcome: who (key id, tenant, role), what (the action
and what it named), when, and the result (a gRPC status name)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

audit_log = logging.getLogger("ragplane.audit")


def record(
    *,
    key_id: str,
    tenant: str,
    role: str,
    action: str,
    transport: str,
    target: dict[str, str],
    result: str,
) -> None:
    """Writes one audit line (the service's JSON log carries it as its message)."""
    entry = {
        "audit": True,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "key_id": key_id,
        "tenant": tenant,
        "role": role,
        "action": action,
        "transport": transport,
        "target": {k: v for k, v in target.items() if v},
        "result": result,
    }
    audit_log.info("%s", json.dumps(entry, ensure_ascii=False, sort_keys=True))

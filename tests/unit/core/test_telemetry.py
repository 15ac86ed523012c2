"""The shared telemetry: structured log lines."""

from __future__ import annotations


def test_a_log_line_is_one_line_whatever_a_logged_value_holds():
    """A request's text can hold U+2028, U+0085, a vertical tab...: each stays escaped, so
    no reader (str.splitlines, a log shipper) breaks the JSON line in two."""
    import json
    import logging

    from ragplane.telemetry import JsonFormatter

    value = "a\nb\rc\x0bd\x1ce\x85f\u2028g\u2029h"
    record = logging.LogRecord("ragplane.audit", logging.INFO, __file__, 1, value, (), None)
    line = JsonFormatter("gateway").format(record)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["message"] == value


def test_refusals_past_the_limit_are_counted_not_logged(caplog):
    """Past the limit in a second, refusals are left out of the access log and the next
    one logged says how many; other calls are always logged."""
    import logging

    from ragplane.telemetry import AccessLog

    now = [100.0]
    log = AccessLog(logging.getLogger("test.access"), refusals_per_s=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.access"):
        for i in range(5):
            log.write(True, "refused %d", i)
        log.write(False, "answered")
        now[0] += 1.0
        log.write(True, "refused %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 1",
        "answered",
        "refused 5 (and 3 refusals not logged before this one)",
    ]

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

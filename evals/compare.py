"""`python -m evals.compare NAME=REPORT ...`: evaluation reports of the same questions
run with different generator models (or settings), side by side, and each against the
first with paired 95 % intervals (evaluation.paired_differences).

    python -m evals.compare smollm2-135m=smol.json qwen2.5-coder-0.5b=q05.json --mode hybrid
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evals.evaluation import paired_differences

COLUMNS = {
    "answer_accuracy": "answer acc.",
    "citation_rate": "[n] rate",
    "correct_citation_rate": "correct citation",
    "invalid_citation_rate": "invalid [n]",
    "attributed_rate": "added [n]",
    "attributed_precision": "added [n] relevant",
    "abstention_accuracy": "abstention acc.",
    "false_abstention_rate": "false abst.",
    "cut_rate": "cut at max_tokens",
    "tokens_per_s_p50": "tokens/s p50",
}


def compare(reports: dict[str, dict[str, Any]], mode: str) -> dict[str, Any]:
    """Each report's summary of `mode`, and every report against the first one."""
    names = list(reports)
    rows = {name: report["per_question"][mode] for name, report in reports.items()}
    return {
        "mode": mode,
        "summaries": {name: reports[name]["modes"][mode] for name in names},
        "against": names[0],
        "differences": paired_differences(rows, baseline=names[0]),
    }


def format_comparison(result: dict[str, Any]) -> str:
    lines = [
        "| model | " + " | ".join(COLUMNS.values()) + " | TTFT p50 ms | ask p50 ms |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for name, s in result["summaries"].items():
        cells = [f"{s[k]:.3f}" if isinstance(s.get(k), float) else "-" for k in COLUMNS]
        latency = s.get("latency_ms_p50", {})
        cells += [
            f"{latency.get('time_to_first_token_ms', 0):.0f}",
            f"{latency.get('total_ms', 0):.0f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    header = f"| model - {result['against']} | answer acc. | correct citation |"
    lines += ["", header, "|---|---|---|"]
    for name, metrics in result["differences"].items():
        cells = [
            f"{m['difference']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"
            f" ({m['better']} better, {m['worse']} worse)"
            for key in ("answer_accuracy", "correct_citation")
            for m in [metrics.get(key)]
            if m
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evals.compare", description=__doc__)
    p.add_argument("reports", nargs="+", help="NAME=REPORT.json, the baseline first")
    p.add_argument("--mode", default="hybrid")
    p.add_argument("--out", type=Path, help="write the comparison as JSON too")
    args = p.parse_args(argv)
    reports = {}
    for item in args.reports:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"{item!r}: use NAME=REPORT.json")
        reports[name] = json.loads(Path(path).read_text())
    result = compare(reports, args.mode)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_comparison(result))


if __name__ == "__main__":
    main()

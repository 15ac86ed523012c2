"""`python -m evals.routing REPORT [--plain MODE ...]`: query-adaptive fusion scored from
one evaluation report, without a stack: each question takes its row from the mode for
exact-identifier questions (ragplane.names.exact_terms, as the retriever decides) or from
the mode for plain-language ones; every mix is printed by kind of question and against
dense search with paired 95 % intervals (evaluation.paired_differences).

    python -m evals.routing docs/eval-postgres-adaptive.json --exact hybrid-rrf \\
        --plain hybrid-weighted-0.7 hybrid-weighted-0.8 hybrid-weighted-0.9 dense
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evals.evaluation import Question, load_questions, paired_differences, summarize
from ragplane.names import exact_terms


def routed(
    per_question: dict[str, list[dict[str, Any]]],
    questions: list[Question],
    exact: str,
    plain: str,
) -> list[dict[str, Any]]:
    """Each question's row from `exact` where it names an exact identifier, else `plain`."""
    by_mode = {mode: {r["id"]: r for r in rows} for mode, rows in per_question.items()}
    return [
        by_mode[exact if exact_terms(q.question) else plain][q.id]
        for q in questions
        if q.id in by_mode[exact]
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evals.routing", description=__doc__)
    p.add_argument("report", type=Path)
    p.add_argument("--exact", default="hybrid-rrf", help="mode for exact-identifier questions")
    p.add_argument("--plain", nargs="+", required=True, help="modes for plain-language ones")
    p.add_argument("--kind", default="", help="only questions of this kind (paraphrase, ...)")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text())
    questions = load_questions(Path(report["questions_file"]))
    if args.kind:
        questions = [q for q in questions if q.kind == args.kind]
    ids = {q.id for q in questions}
    rows = {
        mode: [r for r in mode_rows if r["id"] in ids]
        for mode, mode_rows in report["per_question"].items()
    }
    for plain in args.plain:
        rows[f"{args.exact} | {plain}"] = routed(rows, questions, args.exact, plain)
    differences = paired_differences(rows)
    kinds = sorted({q.kind for q in questions if q.answerable})
    print("| mode | recall@k | nDCG@10 | " + " | ".join(f"{k} r@k / nDCG" for k in kinds) + " |")
    print("|---" * (3 + len(kinds)) + "|")
    for mode, mode_rows in rows.items():
        s = summarize(mode_rows, answers=False)
        cells = [f"{s['recall@k']:.3f}", f"{s['ndcg@10']:.3f}"]
        cells += [
            f"{s['by_kind'][k]['recall@k']:.3f} / {s['by_kind'][k]['ndcg@10']:.3f}" for k in kinds
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    print("\n| mode - dense | recall@k | nDCG@10 |\n|---|---|---|")
    for mode, metrics in differences.items():
        cells = [
            f"{m['difference']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"
            f" ({m['better']}/{m['worse']})"
            for m in (metrics["recall@k"], metrics["ndcg@10"])
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

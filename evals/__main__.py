"""`python -m evals [QUESTIONS] [--corpus handbook|postgres]`: retrieval and answer quality
of a running stack (`ragplane up`) on a questions file, through the gateway's public API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import grpc

from evals import evaluation
from ragplane.client import GrpcClient
from ragplane.ops import stack
from ragplane.ops.cli import gateway_channel, ingest, layout_from_env
from ragplane.v1 import gateway_pb2


async def evaluate(layout: stack.StackLayout, args: argparse.Namespace) -> int:
    modes = args.modes.split(",")
    unknown = {m for m in modes if evaluation.mode_named(m) is None}
    if unknown:
        raise SystemExit(
            f"evals: unknown modes {sorted(unknown)}; use {list(evaluation.MODES)} or "
            f"{evaluation.WEIGHTED_PREFIX}D (dense weight D, 0-1)"
        )
    collection = args.collection
    questions_file = args.questions
    if args.corpus:
        corpus = evaluation.CORPORA[args.corpus]
        evaluation.ensure_documents(corpus, args.install)
        collection = collection or corpus.collection
        questions_file = questions_file or corpus.questions
        print(f"indexing {corpus.documents} into '{collection}' (unchanged documents are skipped)")
        async with gateway_channel(layout) as channel:
            results = await ingest(GrpcClient(channel), [corpus.documents], collection)
        if any(r.status == gateway_pb2.INGEST_STATUS_FAILED for r in results):
            raise SystemExit("evals: some documents failed to index; see above")
    if questions_file is None:
        raise SystemExit("evals: eval needs a questions file or --corpus")
    questions = evaluation.load_questions(questions_file)
    async with gateway_channel(layout) as channel:
        evaluator = evaluation.Evaluator(channel, collection or "default")
        await evaluator.check_modes(questions[0].question, modes)
        answers: bool | set[str] = not args.no_answers
        if args.answers_for and answers:
            answers = set(args.answers_for.split(","))
        report = await evaluator.evaluate(questions, modes, args.k, answers)
    report["questions_file"] = str(questions_file)
    report["collection"] = collection or "default"
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(evaluation.format_table(report))
    if report.get("against_dense"):
        print(evaluation.format_differences(report))
    print(f"report: {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals", description=__doc__)
    p.add_argument("questions", type=Path, nargs="?", help="JSON lines, see samples/README.md")
    p.add_argument(
        "--corpus",
        choices=("handbook", "postgres"),
        help="index a known corpus first (its questions unless a file is given)",
    )
    p.add_argument(
        "--install", action="store_true", help="install the corpus' Debian package if missing"
    )
    p.add_argument("--collection", default="")
    p.add_argument("--modes", default="dense,keyword,hybrid,hybrid+rerank")
    p.add_argument("--k", type=int, default=5, help="cut-off of recall@k")
    p.add_argument("--no-answers", action="store_true", help="ranking metrics only")
    p.add_argument(
        "--answers-for", default="", help="comma-separated modes to get answers in (default all)"
    )
    p.add_argument("--out", type=Path, default=Path("eval-report.json"))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = asyncio.run(evaluate(layout_from_env(), args))
    except grpc.aio.AioRpcError as exc:
        sys.stderr.write(f"evals: {exc.code().name}: {exc.details()}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()

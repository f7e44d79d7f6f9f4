"""Route and answer new prompts with a finished run's task adapters; or export its router.

``python -m fedrouter.predict RUN_DIR`` reads prompts from ``--input`` (JSONL, one object
with an ``instruction`` per line, other fields kept) or from standard input (one prompt per
line), and writes one JSON line per prompt: the input's fields, the routed cluster, its task
label, the distances to the nearest two allowed centroids, the answer, and its ROUGE when the
row has a ``response``. ``--export OUT_DIR`` writes the router as a self-contained folder,
which RUN_DIR may also be. Everything here is a thin layer on ``fedrouter.router.Router``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fedrouter.atomic import atomic_write_text
from fedrouter.config import report_errors
from fedrouter.errors import FedRouterError
from fedrouter.router import ROUTER_FILE, ROUTINGS, Router, RouterError

logger = logging.getLogger("fedrouter.predict")  # also when run as __main__


class InputError(FedRouterError):
    """A prompt file or stream that cannot be read as prompts."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Return the rows of a JSONL file; each must be an object with a non-empty instruction."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read input '{path}': {exc.strerror}") from exc
    rows = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or not JSON
            row = None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n} is not a JSON object")
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError(f"{path}:{n} has no 'instruction' (a non-empty string)")
        rows.append(row)
    if not rows:
        raise InputError(f"input '{path}' is empty: no prompts to answer")
    return rows


def read_lines(stream: IO[str]) -> list[dict[str, Any]]:
    """Return one row per non-blank line of a text stream: the line is the instruction."""
    rows = [{"instruction": line.rstrip("\r\n")} for line in stream if line.strip()]
    if not rows:
        raise InputError("standard input is empty: no prompts to answer")
    return rows


def answer(router: Router, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Route and answer each row; return its output line's object, in input order."""
    from fedrouter.evaluation import ROUGE_KEYS, rouge_per_sample

    texts = [row["instruction"] for row in rows]
    routes = router.route(texts)
    answers = router.generate(texts, routes)
    scored = [i for i, row in enumerate(rows) if isinstance(row.get("response"), str)]
    scores = rouge_per_sample([answers[i] for i in scored], [rows[i]["response"] for i in scored])
    rouge = {
        i: dict(zip(ROUGE_KEYS, map(float, s), strict=True))
        for i, s in zip(scored, scores, strict=True)
    }
    records = []
    for i, (row, where, text) in enumerate(zip(rows, routes, answers, strict=True)):
        record = {**row, **where.to_json(), "answer": text}
        if i in rouge:
            record["rouge"] = rouge[i]
        records.append(record)
    return records


def open_router(args: argparse.Namespace) -> Router:
    """Open the run directory (or router folder) with the command line's options."""
    options = {
        "client": args.client,
        "cluster": args.cluster,
        "routing": args.routing,
        "model": args.model,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "template": args.template,
    }
    source = Path(args.run_dir)
    if (source / ROUTER_FILE).is_file():
        router = Router.from_dir(source, **options)
        exported = router.settings["source"]["round"]
        if args.round is not None and args.round != exported:
            raise RouterError(f"router folder '{source}' holds round {exported} only")
        return router
    return Router.from_run(source, args.round, **options)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Export, or answer the prompts; every check runs before the model loads."""
    if args.export and (args.input or args.output):
        raise InputError(
            "--export writes a router folder and answers nothing: drop --input/--output"
        )
    router = open_router(args)
    if args.export:
        router.export(args.export)
        return []
    router.check_routable()
    rows = read_jsonl(args.input) if args.input else read_lines(sys.stdin)
    logger.info("answering %d prompt(s) with %s", len(rows), router.spec.model_name_or_path)
    records = answer(router, rows)
    counts = Counter(r["cluster"] for r in records)
    logger.info("routed: %s", ", ".join(f"cluster {g}: {n}" for g, n in sorted(counts.items())))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.output:
        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return records


def build_parser() -> argparse.ArgumentParser:
    """Return the command line's parser."""
    parser = argparse.ArgumentParser(
        prog="python -m fedrouter.predict",
        description="Route and answer prompts with a finished run's task adapters.",
        allow_abbrev=False,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or a router folder")
    add = parser.add_argument
    add("--input", help='JSONL file, one {"instruction": ...} per line (default: stdin lines)')
    add("--output", help="write the JSON lines to this file (atomically) instead of stdout")
    add("--client", type=int, help="route among this client's own clusters (local modes)")
    add("--round", type=int, help="a saved round (default: the last of a finished run)")
    add("--cluster", type=int, help="send every prompt to this cluster's adapter")
    add("--routing", choices=ROUTINGS, help="override the run's evaluation_mode routing")
    add("--model", help="the base model's folder or id, if it moved (default: the run's)")
    add("--max_new_tokens", type=int, help="tokens to generate (default: the run's)")
    add("--batch_size", type=int, help="generation batch size (default: the run's eval batch)")
    add("--template", help="prompt template (default: the run's)")
    add("--export", metavar="OUT_DIR", help="write a self-contained router folder and exit")
    add("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line and run; a FedRouterError exits 2 with one line.

    Logging is set up only under ``__main__``: a handler made here would hold on to the
    stderr of the caller's moment (a test's captured stream) after the call.
    """
    args = build_parser().parse_args(argv)
    return report_errors(lambda: run(args), args.debug)


if __name__ == "__main__":
    from fedrouter.logs import setup_logging

    setup_logging("--debug" in sys.argv[1:])
    main()

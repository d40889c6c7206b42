"""`dataengine annotate --simulated`: simulated annotators working on a batch through the HTTP API."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add the `annotate` subcommand."""
    p = subparsers.add_parser(
        "annotate", help="run simulated annotators on a batch (stages 1 and 2) through the annotation API",
        description="N simulated annotators (threads) claim the batch's tasks and annotate them with the click "
                    "protocol and effort model of dataengine.simulate, asking the annotation service for every "
                    "prediction, until the batch is done. The true objects of an image come from its gold "
                    "record or the SA-1B side-car beside its source file (as `dataengine synth` writes them). "
                    "Without --url an annotation service is started in this process on the configured store "
                    "and catalog.")
    p.add_argument("--simulated", action="store_true", required=True,
                   help="required: people annotate in the browser tool, not from the command line")
    p.add_argument("--batch", required=True, help="the batch to work on (the DAG's `batch` param or run's batch)")
    p.add_argument("--workers", type=int, default=2, help="simulated annotators (default 2; double annotation "
                                                          "needs at least 2)")
    p.add_argument("--url", help="annotation service root, e.g. http://127.0.0.1:8765 or "
                                 "http://localhost:8080/dataengine (default: start one here)")
    p.add_argument("--token", action="append", default=[],
                   help="bearer token per worker (repeat); default with --url: issue `simulated-N` tokens in this "
                        "DATAENGINE_HOME (works with `dataengine serve` on the same home)")
    p.add_argument("--lease-seconds", type=float, default=300.0)
    p.add_argument("--wait-seconds", type=float, default=600.0,
                   help="how long to wait for the batch to be opened, or for leased tasks to come back")
    p.add_argument("--target-iou", type=float, default=None, help="stop clicking at this IoU (default 0.9)")
    p.add_argument("--max-clicks", type=int, default=None, help="clicks per object before brush strokes (10)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the simulated annotators; print what each did; non-zero when one failed or lacked truth."""
    from dataengine.catalog import open_catalog
    from dataengine.service.simulated import TruthSource, run_simulated_annotators
    from dataengine.storage import open_store

    if args.workers < 1:
        print("error: --workers must be >= 1")
        return 2
    store, catalog = open_store(), open_catalog()
    truth = TruthSource(store, catalog)
    options = {"lease_seconds": args.lease_seconds, "wait_seconds": args.wait_seconds,
               "target_iou": args.target_iou, "max_clicks": args.max_clicks}
    if args.url:
        tokens = args.token or _issue_tokens(None, args.workers)
        if len(tokens) < args.workers:
            print(f"error: {args.workers} workers need {args.workers} tokens, got {len(tokens)}")
            return 2
        summary = run_simulated_annotators(args.url, tokens[:args.workers], args.batch, truth, **options)
    else:
        summary = _run_locally(store, catalog, truth, args, options)
    _print_summary(summary)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 1 if summary["errors"] or summary["no_truth"] else 0


def _issue_tokens(path, workers: int) -> list[str]:
    from dataengine.service.auth import TokenStore

    tokens = TokenStore(path)
    return [tokens.issue(f"simulated-{i + 1}") for i in range(workers)]


def _run_locally(store, catalog, truth, args, options) -> dict:
    """Start the service in this process (throw-away tokens), run the annotators against it, stop it."""
    import tempfile

    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread
    from dataengine.service.simulated import run_simulated_annotators

    with tempfile.TemporaryDirectory(prefix="dataengine-annotate-") as tmp:
        tokens = TokenStore(f"{tmp}/tokens.json")
        issued = [tokens.issue(f"simulated-{i + 1}") for i in range(args.workers)]
        with ServiceThread(create_app(store, catalog, token_auth(tokens), ui=False)) as server:
            print(f"annotation service for the simulated annotators on {server.url}")
            return run_simulated_annotators(server.url, issued, args.batch, truth, **options)


def _print_summary(summary: dict) -> None:
    print(f"batch {summary['batch']}: {summary['submitted']} images submitted, {summary['skipped']} skipped, "
          f"{summary['masks']} masks; {summary['seconds_per_mask']} s and {summary['clicks_per_mask']} clicks "
          "per mask")
    for report in summary["annotators"]:
        print(f"  {report['annotator']:<16} {report['submitted']:>4} submitted {report['skipped']:>3} skipped "
              f"{report['masks']:>5} masks {report['predictions']:>6} predictions "
              f"({report['stopped_because'] or 'running'})")
    for error in summary["errors"]:
        print(f"  error: {error}")
    if summary["no_truth"]:
        print(f"  no true objects known for {len(summary['no_truth'])} images (skipped): "
              + ", ".join(summary["no_truth"][:10]))

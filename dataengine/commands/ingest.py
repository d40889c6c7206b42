"""`dataengine ingest SOURCE_URI`: validate, blur, resize and register raw images; name every quarantined file."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `ingest` subcommand."""
    from dataengine.images import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE

    p = subparsers.add_parser("ingest", help="ingest raw images from a folder, file:// or s3:// prefix",
                              description="Decode, check, blur faces and plates, downsize and register images. "
                                          "Bad files are quarantined with their reason; the rest goes on.")
    p.add_argument("source", metavar="SOURCE_URI", help="folder, file:///path or s3://bucket/prefix")
    p.add_argument("--gold", metavar="GOLD_SET", help="register as gold set GOLD_SET, reading <stem>.json "
                                                      "(SA-1B schema) beside each image")
    p.add_argument("--split", choices=["train", "gold", "holdout"],
                   help="split to register into (default: gold with --gold, else train)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"downsize so the shortest side is at most this many pixels (default {DEFAULT_MAX_SIDE}; "
                        f"0 keeps the size)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"quarantine images with more pixels than this (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--no-blur", action="store_true", help="do not blur faces and licence plates")
    p.add_argument("--quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality of working images")
    p.add_argument("--run-id", help="label of this run in the catalog (default: ingest__<UTC time>)")
    p.add_argument("--store", help="object store URI (default: DATAENGINE_STORE_URI or the embedded folder)")
    p.add_argument("--db", help="catalog SQLAlchemy URL (default: DATAENGINE_DB_URL or the embedded SQLite)")
    p.add_argument("--report-key", help="also write the report as JSON to this store key")
    p.add_argument("-v", "--verbose", action="store_true", help="list every registered image")
    p.set_defaults(func=run_ingest)


def run_ingest(args) -> int:
    """Run the ingest and print its summary; exit 2 when the source cannot be found."""
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.storage import StoreError, open_store

    try:
        store = open_store(args.store)
        catalog = open_catalog(args.db)
    except (ValueError, StoreError) as exc:
        print(f"dataengine ingest: {exc}", file=sys.stderr)
        return 2
    try:
        report = ingest(args.source, store, catalog, split=args.split, gold_set=args.gold, max_side=args.max_side,
                        max_pixels=args.max_pixels, blur=not args.no_blur, jpeg_quality=args.quality,
                        run_id=args.run_id, report_key=args.report_key)
    except (FileNotFoundError, ValueError, StoreError) as exc:
        print(f"dataengine ingest: {exc}", file=sys.stderr)
        return 2
    finally:
        catalog.dispose()
    print(report.summary(verbose=args.verbose))
    return 0

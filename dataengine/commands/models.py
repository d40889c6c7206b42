"""`dataengine models list|show|promote|rollback|register`: the model registry for operators."""
from __future__ import annotations

import getpass
import json


def register(subparsers) -> None:
    """Add the `models` subcommand and its actions."""
    p = subparsers.add_parser("models", help="list, inspect, register, promote and roll back model versions")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="every version with its status and headline metrics")
    ls.add_argument("name", nargs="?", help="only this model name")
    ls.set_defaults(func=run_list)
    show = actions.add_parser("show", help="one version's card and its promotion history")
    show.add_argument("ref", help="NAME/VERSION, or NAME for its production version")
    show.set_defaults(func=run_show)
    promote = actions.add_parser("promote", help="make a version production (the previous one is archived)")
    promote.add_argument("ref", help="NAME/VERSION (or NAME VERSION)")
    promote.add_argument("version", nargs="?", help="VERSION, when REF is only the name")
    promote.add_argument("--reason", required=True, help="why (recorded with who did it)")
    promote.set_defaults(func=run_promote)
    rollback = actions.add_parser("rollback", help="put back the version the production version replaced")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True)
    rollback.set_defaults(func=run_rollback)
    reg = actions.add_parser("register", help="register a checkpoint file as a candidate version")
    reg.add_argument("ref", help="NAME/VERSION")
    reg.add_argument("checkpoint", help="path of the checkpoint file")
    reg.add_argument("--parent", help="version it was fine-tuned from")
    reg.set_defaults(func=run_register)


def _open():
    from dataengine.catalog import open_catalog
    from dataengine.storage import open_store

    return open_store(), open_catalog()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def run_list(args) -> int:
    """Print one line per model version."""
    _, catalog = _open()
    rows = catalog.list_model_versions(args.name)
    if not rows:
        print("no model versions registered (run `dataengine init`)")
        return 0
    print(f"{'model':<28} {'status':<11} {'parent':<10} metrics")
    for row in rows:
        headline = {k: v for k, v in (row.metrics or {}).items() if isinstance(v, (int, float))}
        shown = ", ".join(f"{k}={v:.3g}" for k, v in list(headline.items())[:4])
        print(f"{row.name + '/' + row.version:<28} {row.status:<11} {row.parent or '-':<10} {shown}")
    return 0


def run_show(args) -> int:
    """Print a version's card and the promotion/rollback history of its name."""
    from dataengine.model.registry import resolve

    store, catalog = _open()
    ref = resolve(store, catalog, args.ref)
    card_key = ref["key"].rsplit("/", 1)[0] + "/card.json"
    card = store.get_json(card_key) if store.exists(card_key) else {}
    print(json.dumps({"reference": ref, "card": card}, indent=2, sort_keys=True, default=str))
    for event in catalog.model_events(ref["name"]):
        print(f"{event.at:%Y-%m-%d %H:%M} {event.kind:<9} {event.from_version or '-'} -> {event.to_version}"
              f"  by {event.by}: {event.reason}")
    return 0


def run_promote(args) -> int:
    """Promote NAME/VERSION to production."""
    if args.version:
        name, version = args.ref, args.version
    elif "/" in args.ref:
        name, version = args.ref.split("/", 1)
    else:
        raise SystemExit("promote needs NAME/VERSION or NAME VERSION, e.g. sam_tiny/v1")
    _, catalog = _open()
    row = catalog.promote(name, version, by=_actor(), reason=args.reason)
    print(f"{row.name}/{row.version} is now production")
    return 0


def run_rollback(args) -> int:
    """Roll NAME back to the version its production version replaced."""
    _, catalog = _open()
    row = catalog.rollback(args.name, by=_actor(), reason=args.reason)
    print(f"rolled back: {row.name}/{row.version} is production again")
    return 0


def run_register(args) -> int:
    """Register a checkpoint file as a candidate, once it loads strictly into the architecture NAME."""
    from dataengine.model import load_model, registered_names
    from dataengine.model.loading import CheckpointMismatch
    from dataengine.model.registry import register_model

    if "/" not in args.ref:
        raise SystemExit("register needs NAME/VERSION, e.g. sam_tiny/v1 or sam2.1_hiera_large/v1")
    name, version = args.ref.split("/", 1)
    if name not in registered_names():
        raise SystemExit(f"register: {name!r} is not an architecture; NAME is one of {', '.join(registered_names())}")
    with open(args.checkpoint, "rb") as fh:
        data = fh.read()
    try:   # nothing is stored unless the file is a whole checkpoint of that architecture
        load_model(name, checkpoint=data, device="cpu")
    except CheckpointMismatch as exc:
        raise SystemExit(f"register: {args.checkpoint} is not a {name} checkpoint: {exc}") from None
    store, catalog = _open()
    ref = register_model(store, catalog, name, version, data, parent=args.parent)
    print(f"registered {ref['version_id']} as {ref['status']} (sha256 {ref['sha256'][:12]})")
    return 0

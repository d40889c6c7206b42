"""`dataengine serve`: the annotation service on its own (uvicorn), and its per-annotator tokens."""
from __future__ import annotations

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser(
        "serve", help="run the annotation service (stages 1 and 2) standalone; manage annotator tokens",
        description="Serve the annotation API (and the browser tool, when installed) with uvicorn. Annotators "
                    "authenticate with tokens: `dataengine serve --issue-token NAME` prints one (stored hashed "
                    "under DATAENGINE_HOME). Inside Airflow the same service is mounted at /dataengine and uses "
                    "Airflow's login instead.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--lease-seconds", type=float, default=None, help="task lease length (default 600)")
    p.add_argument("--model", default=None,
                   help="model for batches opened without a manifest (default: the production model)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads per prediction (default 1: requests run in parallel instead)")
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument("--issue-token", metavar="NAME", help="print a new token for annotator NAME and exit")
    tokens.add_argument("--revoke-token", metavar="NAME", help="revoke annotator NAME's token and exit")
    tokens.add_argument("--list-tokens", action="store_true", help="list annotators holding a token and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    """Manage tokens, or serve until interrupted."""
    from dataengine.service.auth import TokenStore

    tokens = TokenStore()
    if args.issue_token:
        try:
            token = tokens.issue(args.issue_token)
        except ValueError as exc:
            print(f"error: {exc}")
            return 2
        print(token)
        print(f"# token for annotator {args.issue_token!r} (stored hashed in {tokens.path}; shown only now). "
              "Send it as 'Authorization: Bearer <token>'.")
        return 0
    if args.revoke_token:
        if tokens.revoke(args.revoke_token):
            print(f"revoked the token of {args.revoke_token}")
            return 0
        print(f"error: annotator {args.revoke_token!r} has no token")
        return 1
    if args.list_tokens:
        annotators = tokens.annotators()
        if not annotators:
            print("no annotator tokens (issue one with `dataengine serve --issue-token NAME`)")
        for name, issued in annotators.items():
            print(f"{name:<32} issued {issued}")
        return 0
    return serve(args, tokens)


def serve(args, tokens) -> int:
    """Build the app over the configured store and catalog and serve it with uvicorn."""
    import uvicorn

    from dataengine.catalog import DEFAULT_LEASE_SECONDS, open_catalog
    from dataengine.service import create_app
    from dataengine.service.auth import token_auth
    from dataengine.storage import open_store

    store, catalog = open_store(), open_catalog()
    app = create_app(store, catalog, token_auth(tokens), model_ref=args.model,
                     lease_seconds=args.lease_seconds or DEFAULT_LEASE_SECONDS,
                     torch_threads=max(1, args.torch_threads))
    if not tokens.annotators():
        print("note: no annotator has a token yet: `dataengine serve --issue-token NAME`")
    print(f"annotation service on http://{args.host}:{args.port} (API docs: /docs), store {store.uri}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0

"""`dataengine init` and `dataengine env`: set up the embedded runtime and show its environment."""
from __future__ import annotations

import shlex


def register(subparsers) -> None:
    """Add the `init` and `env` subcommands."""
    p = subparsers.add_parser("init", help="initialise the embedded runtime under DATAENGINE_HOME")
    p.add_argument("--no-airflow", action="store_true", help="skip Airflow's metadata DB and pools")
    p.set_defaults(func=run_init)
    e = subparsers.add_parser("env", help="print shell exports that point Airflow at the embedded runtime")
    e.set_defaults(func=run_env)


def run_init(args) -> int:
    """Initialise the runtime and print where everything lives."""
    from dataengine.runtime import init_runtime

    info = init_runtime(with_airflow=not args.no_airflow)
    print(f"engine home   {info.home}")
    print(f"object store  {info.store_uri}")
    print(f"catalog       {info.db_url}")
    print(f"model         {info.production_model or 'none in production (no shipped checkpoint found)'}")
    print(f"airflow home  {info.airflow_home}  (pools: {', '.join(f'{k}={v}' for k, v in info.pools.items())})")
    return 0


def run_env(args) -> int:
    """Print `export NAME=value` lines for `eval "$(dataengine env)"`."""
    from dataengine.runtime import airflow_env

    for name, value in airflow_env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0

"""The production deployment's invariants (docker/), checked without Docker.

Docker cannot run here, so the compose file is parsed and checked by small checker functions, each returning the
problems it finds (an empty list means the invariant holds). Every checker is also fed a deliberately broken copy
of the real file and must report it, so none of them can pass vacuously. The two set-up scripts (`init.sh` for
airflow-init, `postgres-init.sh` for the catalog database) are run for real against the local PostgreSQL.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
INIT_SCRIPT = DOCKER / "init.sh"
POSTGRES_INIT_SCRIPT = DOCKER / "postgres-init.sh"
DOCKERFILE = DOCKER / "Dockerfile"

CONNECTIONS = ("dataengine_store", "dataengine_db")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN", "FERNET")
PLACEHOLDER = "CHANGE_ME"
# `${NAME}`, `${NAME:?message}`, `${NAME?message}`: a reference with no inline fallback value (`$${X}` is an
# escaped dollar for the container's shell, not a compose reference).
PLAIN_REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}")
ANY_REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]+)@")
REFERENCE_TOKEN = "\x00ref\x00"


# --- reading the files ------------------------------------------------------------------------------------------
def load_compose(path: Path = COMPOSE_FILE) -> dict:
    """Return the compose file as a dict (YAML anchors and `<<` merges resolved, `${...}` left as text).

    Services that share an anchor come back from the YAML loader sharing the same objects; the JSON round trip
    gives each its own copy, so changing one service (as the broken-copy tests do) never changes another.
    """
    return json.loads(json.dumps(yaml.safe_load(path.read_text())))


def parse_env_file(text: str) -> dict[str, str]:
    """Return the NAME=value pairs of a .env file (comments and blank lines ignored)."""
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def environment(service: dict) -> dict[str, str]:
    """Return a service's environment as a dict, whether written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_tokens(service: dict) -> list[str]:
    """Return a service's entrypoint + command as a list of tokens."""
    tokens = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, str):
            tokens += shlex.split(value)
        elif value:
            tokens += [str(v) for v in value]
    return tokens


def airflow_services(compose: dict) -> dict[str, dict]:
    """Return the Airflow services: named `airflow-*` or running the shared image."""
    image = (compose.get("x-airflow-common") or {}).get("image")
    return {name: svc for name, svc in compose["services"].items()
            if name.startswith("airflow-") or (image and svc.get("image") == image)}


def celery_worker_options(service: dict) -> dict | None:
    """Return {"queues": [...], "concurrency": str | None} for a `celery worker` service, else None."""
    tokens = command_tokens(service)
    for i in range(len(tokens) - 1):
        if tokens[i] == "celery" and tokens[i + 1] == "worker":
            options = {"queues": ["default"], "concurrency": None}
            rest = tokens[i + 2:]
            for j, token in enumerate(rest):
                flag, eq, inline = token.partition("=")
                value = inline if eq else (rest[j + 1] if j + 1 < len(rest) else None)
                if flag in ("-q", "--queues") and value is not None:
                    options["queues"] = [q for q in value.split(",") if q]
                elif flag in ("-c", "--concurrency") and value is not None:
                    options["concurrency"] = value
            return options
    return None


def nvidia_devices(service: dict) -> list[dict]:
    """Return the NVIDIA device reservations of a service (`deploy.resources.reservations.devices`)."""
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or [])]


def walk_strings(value, path: str = ""):
    """Yield (path, string) for every string inside a nested YAML value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def is_secret_name(name: str) -> bool:
    """Return whether a variable name says it holds a secret."""
    return any(word in name.upper() for word in SECRET_WORDS)


def script_commands(script: str) -> list[str]:
    """Return the script's logical lines: comments dropped, backslash continuations joined."""
    joined = re.sub(r"\\\n", " ", script)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def gpu_queue_of_operators() -> str:
    """Return the queue GPU operators use by default (`operators.GPU_QUEUE` with DATAENGINE_GPU_QUEUE unset)."""
    code = ("import os; os.environ.pop('DATAENGINE_GPU_QUEUE', None); import operators; "
            "print(operators.GPU_QUEUE)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"importing operators.GPU_QUEUE failed: {done.stderr[-2000:]}"
    return done.stdout.strip().splitlines()[-1]


# --- the checkers -----------------------------------------------------------------------------------------------
def check_shared_configuration(compose: dict) -> list[str]:
    """Every Airflow service runs the shared image with the whole shared environment and volumes, unchanged."""
    problems = []
    common = compose.get("x-airflow-common")
    if not common or not common.get("image"):
        return ["x-airflow-common with an image is missing"]
    common_env = environment(common)
    services = airflow_services(compose)
    for name, svc in services.items():
        if svc.get("image") != common["image"]:
            problems.append(f"{name}: image {svc.get('image')!r} is not the shared {common['image']!r}")
        if svc.get("build") != common.get("build"):
            problems.append(f"{name}: build differs from x-airflow-common")
        env = environment(svc)
        for key, value in common_env.items():
            if key not in env:
                problems.append(f"{name}: environment lacks {key} from x-airflow-common")
            elif env[key] != value:
                problems.append(f"{name}: environment {key} differs from x-airflow-common")
        for volume in common.get("volumes") or []:
            if volume not in (svc.get("volumes") or []):
                problems.append(f"{name}: volume {volume!r} from x-airflow-common is missing")
    running = {t for svc in services.values() for t in command_tokens(svc)[:1]}
    for component in AIRFLOW_COMPONENTS:
        if component not in running:
            problems.append(f"no Airflow service runs `{component}`")
    if common_env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
        problems.append("x-airflow-common: AIRFLOW__CORE__EXECUTOR is not CeleryExecutor")
    for key in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "DATAENGINE_STORE_URI", "DATAENGINE_DB_URL"):
        if not common_env.get(key):
            problems.append(f"x-airflow-common: {key} is not set")
    metadata_db = common_env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").rsplit("/", 1)[-1]
    catalog_db = common_env.get("DATAENGINE_DB_URL", "").rsplit("/", 1)[-1]
    if metadata_db and metadata_db == catalog_db:
        problems.append(f"the catalog and Airflow's metadata share the database {metadata_db!r}")
    return problems


def check_gpu_workers(compose: dict, gpu_queue: str) -> list[str]:
    """GPU workers consume only the operators' GPU queue, one task at a time, on one reserved NVIDIA GPU each;
    no other worker takes GPU tasks; CPU work (queue `default`) has a worker."""
    problems = []
    workers = {name: (svc, celery_worker_options(svc)) for name, svc in airflow_services(compose).items()}
    workers = {name: (svc, opts) for name, (svc, opts) in workers.items() if opts is not None}
    gpu_workers = {name for name, (svc, opts) in workers.items() if nvidia_devices(svc) or gpu_queue in opts["queues"]}
    if not gpu_workers:
        problems.append(f"no GPU worker: no celery worker consumes {gpu_queue!r} with an NVIDIA device reserved")
    device_owner: dict[str, str] = {}
    for name in sorted(gpu_workers):
        svc, opts = workers[name]
        if opts["queues"] != [gpu_queue]:
            problems.append(f"{name}: GPU worker consumes {opts['queues']}, expected only [{gpu_queue!r}]")
        if opts["concurrency"] != "1":
            problems.append(f"{name}: GPU worker concurrency is {opts['concurrency']!r}, expected '1' (-c 1)")
        devices = nvidia_devices(svc)
        if not devices:
            problems.append(f"{name}: consumes {gpu_queue!r} but reserves no NVIDIA device")
        for device in devices:
            ids = [str(i) for i in device.get("device_ids") or []]
            if device.get("driver") != "nvidia" or "gpu" not in (device.get("capabilities") or []):
                problems.append(f"{name}: device reservation needs driver nvidia and capabilities [gpu]")
            if len(ids) != 1 and str(device.get("count")) != "1":
                problems.append(f"{name}: reserves {ids or device.get('count')}, expected exactly one GPU")
            for gpu in ids:
                if gpu in device_owner:
                    problems.append(f"{name}: GPU {gpu} is already reserved by {device_owner[gpu]}")
                device_owner[gpu] = name
    cpu_queues = [q for name, (svc, opts) in workers.items() if name not in gpu_workers for q in opts["queues"]]
    if "default" not in cpu_queues:
        problems.append("no CPU worker consumes the 'default' queue")
    for name, svc in {"x-airflow-common": compose.get("x-airflow-common") or {}, **airflow_services(compose)}.items():
        queue = environment(svc).get("DATAENGINE_GPU_QUEUE")
        if queue is not None and queue != gpu_queue:
            problems.append(f"{name}: DATAENGINE_GPU_QUEUE={queue!r} but the GPU workers consume {gpu_queue!r}")
    return problems


def check_init_creates(compose: dict, dockerfile: str, script: str, pools, connections=CONNECTIONS) -> list[str]:
    """airflow-init runs the script the image ships, and the script migrates both databases and creates every pool
    and connection the DAGs need, with the variables it requires present in its environment."""
    problems = []
    init = compose["services"].get("airflow-init")
    if init is None:
        return ["no airflow-init service"]
    shipped = re.findall(r"^COPY\s+(?:--\S+\s+)*docker/init\.sh\s+(\S+)\s*$", dockerfile, re.MULTILINE)
    if not shipped:
        problems.append("the Dockerfile does not COPY docker/init.sh into the image")
    elif shipped[0] not in command_tokens(init):
        problems.append(f"airflow-init does not run {shipped[0]} (the image's copy of docker/init.sh)")
    lines = script_commands(script)

    def has(pattern: str) -> bool:
        return any(re.match(pattern, line) for line in lines)

    for pool in pools:
        if not has(rf"airflow pools set {re.escape(pool)}\s"):
            problems.append(f"init script does not create pool {pool!r} (airflow pools set {pool} ...)")
    for conn_id in connections:
        if not has(rf"airflow connections add {re.escape(conn_id)}\s"):
            problems.append(f"init script does not create connection {conn_id!r}")
    if not has(r"airflow db migrate\b"):
        problems.append("init script does not run `airflow db migrate`")
    if not has(r"dataengine init --no-airflow\b"):
        problems.append("init script does not migrate the catalog (`dataengine init --no-airflow`)")
    env = environment(init)
    for line in lines:
        if line.startswith("require "):
            for name in line.split()[1:]:
                if name not in env:
                    problems.append(f"init script requires {name} but airflow-init's environment lacks it")
    return problems


def check_no_inline_secrets(compose: dict) -> list[str]:
    """Secrets only as `${VAR}` / `${VAR:?...}` references: secret-named variables, URL passwords, no defaults."""
    problems = []
    sections = {"x-airflow-common": compose.get("x-airflow-common") or {}, **compose["services"]}
    for name, svc in sections.items():
        for key, value in environment(svc).items():
            if is_secret_name(key) and not PLAIN_REFERENCE.fullmatch(value):
                problems.append(f"{name}: {key} is written inline; use ${{{key}...}} from docker/.env")
    for path, text in walk_strings(compose):
        for ref in ANY_REFERENCE.finditer(text):
            if is_secret_name(ref.group("name")) and not PLAIN_REFERENCE.fullmatch(ref.group(0)):
                problems.append(f"{path}: {ref.group('name')} has an inline fallback value")
        masked = PLAIN_REFERENCE.sub(REFERENCE_TOKEN, text)
        for url in URL_PASSWORD.finditer(masked):
            if url.group("password") != REFERENCE_TOKEN:
                problems.append(f"{path}: a URL carries an inline password")
    return problems


def check_env_example(env_text: str, compose: dict) -> list[str]:
    """.env.example documents every variable the compose file reads and holds placeholders for every secret."""
    problems = []
    pairs = parse_env_file(env_text)
    for name, value in pairs.items():
        if is_secret_name(name) and value not in ("", PLACEHOLDER):
            problems.append(f".env.example: {name} holds a value; secrets must be the placeholder {PLACEHOLDER}")
    referenced = {ref.group("name") for _, text in walk_strings(compose) for ref in ANY_REFERENCE.finditer(text)}
    for name in sorted(referenced - set(pairs)):
        problems.append(f".env.example does not describe {name}, which docker-compose.yaml reads")
    return problems


def check_gpu_pool_slots(compose: dict, env_text: str, gpu_queue: str) -> list[str]:
    """The `gpu` pool's slots in .env.example equal the number of GPU workers in the compose file."""
    slots = parse_env_file(env_text).get("DATAENGINE_GPU_POOL_SLOTS")
    workers = [svc for svc in airflow_services(compose).values()
               if (celery_worker_options(svc) or {}).get("queues") == [gpu_queue] and nvidia_devices(svc)]
    if slots != str(len(workers)):
        return [f".env.example: DATAENGINE_GPU_POOL_SLOTS={slots} but the compose file has {len(workers)} GPU workers"]
    return []


def check_healthchecks(compose: dict) -> list[str]:
    """Every service has a health check, or is a one-shot that others wait for to complete."""
    problems = []
    services = compose["services"]
    awaited = {dep for svc in services.values() for dep, cond in _depends_on(svc).items()
               if cond == "service_completed_successfully"}
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        healthy = bool(check.get("test")) and not check.get("disable")
        one_shot = str(svc.get("restart", "no")) in ("no", "on-failure") and name in awaited
        if not healthy and not one_shot:
            problems.append(f"{name}: no health check and not a one-shot init")
    for name, svc in services.items():
        for dep, cond in _depends_on(svc).items():
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif cond == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
                problems.append(f"{name}: waits for {dep} to be healthy but {dep} has no health check")
    return problems


def _depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in deps.items()}


def check_named_volumes(compose: dict) -> list[str]:
    """Named volumes are declared; the databases, the object store and Airflow's logs live on named volumes."""
    problems = []
    declared = set((compose.get("volumes") or {}).keys())
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes") or []:
            if isinstance(volume, dict):
                source, target = str(volume.get("source", "")), str(volume.get("target", ""))
            else:
                source, _, rest = str(volume).partition(":")
                target = rest.split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                mounts.setdefault(name, {})[target] = source
                if source not in declared:
                    problems.append(f"{name}: volume {source!r} is not declared under top-level volumes")
    for service, target in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data"),
                            ("airflow-scheduler", "/opt/airflow/logs")):
        if target not in mounts.get(service, {}):
            problems.append(f"{service}: {target} is not on a named volume")
    return problems


def check_dockerfile(dockerfile: str, pyproject: str) -> list[str]:
    """The image is the official Airflow image of the version pyproject.toml pins (Python 3.11), with the project
    pip-installed and the DAGs and plugins where Airflow looks for them."""
    import tomllib

    problems = []
    pins = [d for d in tomllib.loads(pyproject)["project"]["dependencies"] if d.startswith("apache-airflow==")]
    version = pins[0].split("==")[1] if pins else None
    base = re.search(r"^ARG AIRFLOW_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    if not base or base.group(1) != f"apache/airflow:{version}-python3.11":
        found = base.group(1) if base else None
        problems.append(f"base image {found!r} is not apache/airflow:{version}-python3.11 (pyproject pins {version})")
    if not re.search(r"^FROM \$\{AIRFLOW_IMAGE\}", dockerfile, re.MULTILINE):
        problems.append("the Dockerfile is not built FROM ${AIRFLOW_IMAGE}")
    if not re.search(r"pip install [^\n]*/opt/dataengine/src\b", dockerfile):
        problems.append("the Dockerfile does not pip-install the project")
    for folder in ("dags", "plugins"):
        if not re.search(rf"^COPY\s+(?:--\S+\s+)*{folder}\s+/opt/airflow/{folder}\s*$", dockerfile, re.MULTILINE):
            problems.append(f"the Dockerfile does not copy {folder}/ to /opt/airflow/{folder}")
    return problems


# --- the real files hold every invariant ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose():
    return load_compose()


@pytest.fixture(scope="module")
def gpu_queue():
    return gpu_queue_of_operators()


@pytest.fixture(scope="module")
def pools():
    from dataengine.runtime import POOLS

    return dict(POOLS)


def test_every_airflow_service_shares_one_image_and_configuration(compose):
    assert len(airflow_services(compose)) >= 7
    assert check_shared_configuration(compose) == []


def test_gpu_worker_consumes_only_the_operators_gpu_queue_one_task_at_a_time(compose, gpu_queue):
    assert gpu_queue == "gpu"
    assert check_gpu_workers(compose, gpu_queue) == []
    assert check_gpu_pool_slots(compose, ENV_EXAMPLE.read_text(), gpu_queue) == []


def test_airflow_init_creates_every_pool_and_connection_the_dags_need(compose, pools):
    assert "gpu" in pools
    assert check_init_creates(compose, DOCKERFILE.read_text(), INIT_SCRIPT.read_text(), pools) == []


def test_no_secret_is_written_in_the_compose_file(compose):
    assert check_no_inline_secrets(compose) == []


def test_env_example_describes_every_variable_with_placeholder_secrets(compose):
    assert check_env_example(ENV_EXAMPLE.read_text(), compose) == []


def test_every_service_has_a_health_check_or_is_a_one_shot_init(compose):
    assert check_healthchecks(compose) == []


def test_named_volumes_are_declared_and_hold_the_state(compose):
    assert check_named_volumes(compose) == []


def test_image_is_the_pinned_official_airflow_image_with_the_project_installed():
    dockerfile, pyproject = DOCKERFILE.read_text(), (REPO / "pyproject.toml").read_text()
    assert check_dockerfile(dockerfile, pyproject) == []
    older_base = dockerfile.replace("apache/airflow:3.3.2-python3.11", "apache/airflow:3.2.0-python3.11")
    assert any("is not apache/airflow:3.3.2-python3.11" in p for p in check_dockerfile(older_base, pyproject))
    no_dags = re.sub(r"^COPY .* dags /opt/airflow/dags$", "", dockerfile, flags=re.MULTILINE)
    assert any("does not copy dags/" in p for p in check_dockerfile(no_dags, pyproject))


def test_scripts_are_valid_bash():
    for script in (INIT_SCRIPT, POSTGRES_INIT_SCRIPT):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"
        assert os.access(script, os.X_OK), f"{script.name} must be executable (the postgres image runs it)"


# --- each checker reports a broken copy -------------------------------------------------------------------------
def _service(compose, name):
    return compose["services"][name]


def _set_env(svc, key, value):
    env = svc.setdefault("environment", {})
    env[key] = value


BROKEN_COMPOSE = {
    # name: (mutation, checker, expected fragment of a problem)
    "inline fernet key": (lambda c: _set_env(c["x-airflow-common"], "AIRFLOW__CORE__FERNET_KEY", "a2V5a2V5a2V5"),
                          "secrets", "AIRFLOW__CORE__FERNET_KEY is written inline"),
    "inline password in a service": (lambda c: _set_env(_service(c, "postgres"), "POSTGRES_PASSWORD", "hunter22"),
                                     "secrets", "postgres: POSTGRES_PASSWORD is written inline"),
    "secret with a fallback value": (
        lambda c: _set_env(_service(c, "airflow-init"), "AIRFLOW_ADMIN_PASSWORD", "${AIRFLOW_ADMIN_PASSWORD:-admin}"),
        "secrets", "AIRFLOW_ADMIN_PASSWORD has an inline fallback"),
    "password inside a broker URL": (
        lambda c: _set_env(_service(c, "airflow-worker"), "AIRFLOW__CELERY__BROKER_URL",
                           "redis://:s3cr3t@redis:6379/0"),
        "secrets", "a URL carries an inline password"),
    "GPU worker on the default queue": (
        lambda c: _service(c, "airflow-worker-gpu0").update(command=["celery", "worker", "-q", "default", "-c", "1"]),
        "gpu", "GPU worker consumes ['default']"),
    "GPU worker with four tasks at a time": (
        lambda c: _service(c, "airflow-worker-gpu0").update(command=["celery", "worker", "-q", "gpu", "-c", "4"]),
        "gpu", "concurrency is '4'"),
    "GPU worker without a GPU": (lambda c: _service(c, "airflow-worker-gpu0").pop("deploy"),
                                 "gpu", "reserves no NVIDIA device"),
    "CPU worker taking GPU tasks": (
        lambda c: _service(c, "airflow-worker").update(command=["celery", "worker", "-q", "default,gpu"]),
        "gpu", "GPU worker consumes ['default', 'gpu']"),
    "two GPU workers on one GPU": (
        lambda c: c["services"].update({"airflow-worker-gpu1": copy.deepcopy(_service(c, "airflow-worker-gpu0"))}),
        "gpu", "GPU 0 is already reserved"),
    "operators' queue overridden": (lambda c: _set_env(c["x-airflow-common"], "DATAENGINE_GPU_QUEUE", "cuda"),
                                    "gpu", "DATAENGINE_GPU_QUEUE='cuda'"),
    "scheduler on another image": (lambda c: _service(c, "airflow-scheduler").update(image="apache/airflow:3.3.2"),
                                   "shared", "airflow-scheduler: image"),
    "triggerer with its own metadata DB": (
        lambda c: _set_env(_service(c, "airflow-triggerer"), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                           "sqlite:////tmp/a.db"),
        "shared", "airflow-triggerer: environment AIRFLOW__DATABASE__SQL_ALCHEMY_CONN differs"),
    "no dag processor": (lambda c: c["services"].pop("airflow-dag-processor"), "shared", "runs `dag-processor`"),
    "catalog in Airflow's database": (
        lambda c: _set_env(c["x-airflow-common"], "DATAENGINE_DB_URL", "postgresql+psycopg2://u:${P}@postgres/airflow"),
        "shared", "share the database 'airflow'"),
    "scheduler without a health check": (lambda c: _service(c, "airflow-scheduler").pop("healthcheck"),
                                         "health", "airflow-scheduler: no health check"),
    "init service nobody waits for": (
        lambda c: [svc.get("depends_on", {}).pop("minio-init", None) for svc in c["services"].values()],
        "health", "minio-init: no health check and not a one-shot"),
    "undeclared volume": (lambda c: c["volumes"].pop("minio-data"), "volumes", "'minio-data' is not declared"),
    "database on the container's disk": (lambda c: _service(c, "postgres").update(volumes=[]),
                                         "volumes", "postgres: /var/lib/postgresql/data is not on a named volume"),
    "init script not in the image": (lambda c: _service(c, "airflow-init").update(command=["/opt/other.sh"]),
                                     "init", "airflow-init does not run /opt/dataengine/init.sh"),
    "init lacks a required variable": (
        lambda c: _service(c, "airflow-init")["environment"].pop("AIRFLOW_ADMIN_PASSWORD"),
        "init", "requires AIRFLOW_ADMIN_PASSWORD"),
}


def _run_checker(kind: str, compose: dict, gpu_queue: str, pools) -> list[str]:
    if kind == "secrets":
        return check_no_inline_secrets(compose)
    if kind == "gpu":
        return check_gpu_workers(compose, gpu_queue)
    if kind == "shared":
        return check_shared_configuration(compose)
    if kind == "health":
        return check_healthchecks(compose)
    if kind == "volumes":
        return check_named_volumes(compose)
    if kind == "init":
        return check_init_creates(compose, DOCKERFILE.read_text(), INIT_SCRIPT.read_text(), pools)
    raise ValueError(kind)


@pytest.mark.parametrize("breakage", sorted(BROKEN_COMPOSE))
def test_checkers_report_a_broken_compose_file(breakage, compose, gpu_queue, pools):
    mutate, kind, expected = BROKEN_COMPOSE[breakage]
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert _run_checker(kind, compose, gpu_queue, pools) == [], "the real file must pass before breaking it"
    problems = _run_checker(kind, broken, gpu_queue, pools)
    assert any(expected in problem for problem in problems), f"{breakage}: expected {expected!r} in {problems}"


def test_init_checker_reports_a_missing_pool_or_connection(compose, pools):
    script = INIT_SCRIPT.read_text()
    dockerfile = DOCKERFILE.read_text()
    without_pool = re.sub(r"^airflow pools set gpu ", "# airflow pools set gpu ", script, flags=re.MULTILINE)
    assert "pool 'gpu'" in " ".join(check_init_creates(compose, dockerfile, without_pool, pools))
    without_db = re.sub(r"^airflow connections add dataengine_db\b", "true", script, flags=re.MULTILINE)
    assert "connection 'dataengine_db'" in " ".join(check_init_creates(compose, dockerfile, without_db, pools))
    more_pools = {**pools, "annotators": (4, "a pool a DAG might add")}
    assert "pool 'annotators'" in " ".join(check_init_creates(compose, dockerfile, script, more_pools))


def test_env_checkers_report_a_real_secret_or_an_undocumented_variable(compose, gpu_queue):
    text = ENV_EXAMPLE.read_text()
    leaked = text.replace("REDIS_PASSWORD=CHANGE_ME", "REDIS_PASSWORD=0f1e2d3c4b5a")
    assert any("REDIS_PASSWORD holds a value" in p for p in check_env_example(leaked, compose))
    undocumented = re.sub(r"^MINIO_ROOT_USER=.*$", "", text, flags=re.MULTILINE)
    assert any("does not describe MINIO_ROOT_USER" in p for p in check_env_example(undocumented, compose))
    two_slots = text.replace("DATAENGINE_GPU_POOL_SLOTS=1", "DATAENGINE_GPU_POOL_SLOTS=2")
    assert check_gpu_pool_slots(compose, two_slots, gpu_queue) != []


# --- the set-up scripts, run for real -----------------------------------------------------------------------------
def _psql_env(**extra) -> dict[str, str]:
    from tests.fixtures_services import PG_ADMIN_URL
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "PGHOST": admin.host or "127.0.0.1", "PGPORT": str(admin.port or 5432),
            "POSTGRES_USER": admin.username or "postgres", "POSTGRES_DB": admin.database or "postgres", **extra}


@pytest.fixture
def catalog_database(pg_admin):
    """Run docker/postgres-init.sh for a fresh catalog role and database; return (role, database); drop them after."""
    from sqlalchemy import text

    suffix = uuid.uuid4().hex[:10]
    role, database = f"catalog_{suffix}", f"catalog_db_{suffix}"
    yield role, database
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _run_postgres_init(role: str, database: str, password: str) -> subprocess.CompletedProcess:
    env = _psql_env(DATAENGINE_DB_PASSWORD=password, DATAENGINE_DB_USER=role, DATAENGINE_DB_NAME=database)
    return subprocess.run(["bash", str(POSTGRES_INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.postgres
def test_postgres_init_creates_a_separate_catalog_database_idempotently(pg_admin, catalog_database):
    from sqlalchemy import text

    role, database = catalog_database

    def state():
        with pg_admin.connect() as conn:
            owner = conn.execute(text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :d"),
                                 {"d": database}).scalar()
            login, password_hash = conn.execute(
                text("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}).one()
        return owner, login, password_hash

    first = _run_postgres_init(role, database, "it's a p@ss; DROP TABLE x")
    assert first.returncode == 0, first.stderr
    owner, login, first_hash = state()
    assert (owner, login) == (role, True) and first_hash
    second = _run_postgres_init(role, database, "a-new-password")
    assert second.returncode == 0, second.stderr
    owner, login, second_hash = state()
    assert (owner, login) == (role, True) and second_hash != first_hash

    missing = _run_postgres_init(role, database, "")
    assert missing.returncode != 0 and "DATAENGINE_DB_PASSWORD" in missing.stderr


def _init_env(tmp_path: Path, metadata_url: str, catalog_url: str, s3, slots: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    venv_bin = Path(sys.executable).parent
    fernet = tmp_path / "fernet.key"
    if not fernet.exists():
        fernet.write_text(Fernet.generate_key().decode())
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    return {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CORE__FERNET_KEY": fernet.read_text(),
        "AIRFLOW_ADMIN_USERNAME": "operator",
        "AIRFLOW_ADMIN_PASSWORD": "0123456789abcdef",
        "AIRFLOW_ADMIN_EMAIL": "operator@example.org",
        "DATAENGINE_GPU_POOL_SLOTS": slots,
        "DATAENGINE_HOME": str(tmp_path / "engine"),
        "DATAENGINE_BUCKET": s3["bucket"],
        "DATAENGINE_STORE_URI": f"s3://{s3['bucket']}",
        "DATAENGINE_S3_ENDPOINT": s3["endpoint"],
        "DATAENGINE_S3_ACCESS_KEY": s3["access_key"],
        "DATAENGINE_S3_SECRET_KEY": s3["secret_key"],
        "DATAENGINE_S3_SECURE": "false",
        "DATAENGINE_DB_URL": catalog_url,
        "GX_ANALYTICS_ENABLED": "False",
    }


def _run_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.postgres
def test_airflow_init_sets_up_a_fresh_deployment_and_reruns_cleanly(tmp_path, pg_url, pg_admin, catalog_database,
                                                                    s3_server):
    """The airflow-init script against real PostgreSQL databases and a real S3 server: twice, as every start does."""
    from sqlalchemy import create_engine, inspect, text
    from tests.fixtures_services import S3_BUCKET

    role, database = catalog_database
    assert _run_postgres_init(role, database, "catalog-password").returncode == 0
    psql = _psql_env()
    catalog_url = f"postgresql+psycopg2://{role}:catalog-password@{psql['PGHOST']}:{psql['PGPORT']}/{database}"
    s3 = {"bucket": S3_BUCKET, "endpoint": s3_server.endpoint, "access_key": s3_server.access_key,
          "secret_key": s3_server.secret_key}

    placeholder = _run_init({**_init_env(tmp_path, pg_url, catalog_url, s3, "1"),
                             "AIRFLOW_ADMIN_PASSWORD": PLACEHOLDER})
    assert placeholder.returncode != 0 and "AIRFLOW_ADMIN_PASSWORD" in placeholder.stderr
    assert "airflow-init: migrating" not in placeholder.stdout, "a placeholder must stop the set-up before any change"

    first = _run_init(_init_env(tmp_path, pg_url, catalog_url, s3, "1"))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second_env = _init_env(tmp_path, pg_url, catalog_url, s3, "2")   # a second GPU was added to .env
    second = _run_init(second_env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    metadata = create_engine(pg_url)
    try:
        with metadata.connect() as conn:
            pools = dict(conn.execute(text("SELECT pool, slots FROM slot_pool")).all())
            users = conn.execute(text("SELECT username FROM ab_user")).scalars().all()
            connection_ids = conn.execute(text("SELECT conn_id FROM connection ORDER BY conn_id")).scalars().all()
    finally:
        metadata.dispose()
    from dataengine.runtime import POOLS

    assert pools["gpu"] == 2 and set(POOLS) <= set(pools)
    assert users == ["operator"]
    assert connection_ids == ["dataengine_db", "dataengine_store"]   # replaced, never duplicated

    listed = subprocess.run(["airflow", "connections", "list", "--show-values", "-o", "json"], env=second_env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    connections = {c["conn_id"]: c for c in json.loads(listed.stdout[listed.stdout.index("["):])}
    store = connections["dataengine_store"]
    host, port = s3["endpoint"].rsplit(":", 1)
    assert (store["host"], str(store["port"]), store["login"], store["password"]) == \
        (host, port, s3["access_key"], s3["secret_key"])
    assert store["extra_dejson"]["bucket"] == S3_BUCKET
    assert str(store["extra_dejson"]["secure"]).lower() == "false"
    assert connections["dataengine_db"]["get_uri"] == catalog_url

    catalog = create_engine(catalog_url)
    try:
        assert inspect(catalog).get_table_names(), "the catalog database has no tables after `dataengine init`"
    finally:
        catalog.dispose()

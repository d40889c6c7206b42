"""A real Airflow deployment on loopback for tests: CeleryExecutor on PostgreSQL and Redis, Celery workers.

`CeleryCluster` runs what docker/docker-compose.yaml runs, as plain processes sharing one temporary
AIRFLOW_HOME and DATAENGINE_HOME: an `airflow-init` step (metadata DB migrated, pools, connections
`dataengine_store` / `dataengine_db`), then the API server, the scheduler, the DAG processor, a CPU worker
consuming `default` and GPU workers (one, or `gpu_workers`) consuming only the GPU queue with one task at a
time each. Each process runs in
its own process group and carries a marker variable in its environment, so `stop()` ends the groups and
`leftover_processes()` finds anything that escaped them (psutil).

All workers run on this one machine, so each gets its own Airflow hostname through `[core] hostname_callable`
= `tests.celery_cluster.worker_hostname` (reads `DATAENGINE_TEST_WORKER_HOSTNAME`): task instances then record
which worker ran them, as they would on two machines. This module never imports pytest (workers import it).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

WORKER_HOSTNAME_ENV = "DATAENGINE_TEST_WORKER_HOSTNAME"
MARKER_ENV = "DATAENGINE_TEST_CLUSTER"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"  # a Redis db number of its own, flushed at start and end
REDIS_START_COMMAND = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                       "--save", "", "--appendonly", "no"]


def worker_hostname() -> str:
    """Return the hostname Airflow records for this process: `DATAENGINE_TEST_WORKER_HOSTNAME`, else the FQDN."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


class ServiceUnavailable(RuntimeError):
    """Raised when a service the cluster needs (Redis, PostgreSQL) cannot be reached nor started."""


def connect_redis(url: str, start: bool = True):
    """Return a Redis client for `url` after a PING; start a local loopback server once if none answers."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
        return client
    except redis.RedisError as first:
        if not start:
            raise ServiceUnavailable(f"no Redis at {url}: {first}") from None
        try:
            done = subprocess.run(REDIS_START_COMMAND, capture_output=True, text=True, timeout=30)
            attempt = f"`redis-server` exited {done.returncode} {done.stderr.strip()[:200]}"
        except (OSError, subprocess.SubprocessError) as exc:
            attempt = f"could not run redis-server: {exc}"
        for _ in range(20):
            try:
                client.ping()
                return client
            except redis.RedisError:
                time.sleep(0.25)
        raise ServiceUnavailable(f"no Redis at {url} ({first}) and starting one failed ({attempt})") from None


@dataclass
class Service:
    """One long-running Airflow process of the cluster."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    killed: bool = False        # stopped on purpose by a test (a fault): its exit is not a failure of the cluster

    def start(self) -> None:
        """Start the process in a new session (its own process group), in and logging to `log_path`'s folder."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.log_path.parent,
                                            start_new_session=True)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the process group the service leads (no-op once it has been reaped)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of the service's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


@dataclass
class CeleryCluster:
    """Airflow with the CeleryExecutor on loopback: metadata in PostgreSQL, broker Redis, a CPU and GPU workers.

    `metadata_url` is a SQLAlchemy URL of an empty PostgreSQL database for Airflow; `connections` maps
    connection ids to Airflow connection dicts (conn_type, host, port, login, password, schema, extra) that the
    init step writes to the metadata DB; `gpu_queue` is the queue the GPU workers consume alone (`gpu_workers`
    of them, one task at a time each, as one worker per GPU); `heartbeat_timeout` (seconds), when set, is how
    soon the scheduler gives up on a task whose worker stopped answering (Airflow's default: 300 s).
    """

    base: Path
    metadata_url: str
    redis_url: str
    connections: dict[str, dict]
    gpu_queue: str = "gpu"
    gpu_workers: int = 1
    heartbeat_timeout: int | None = None
    parallelism: int = 4
    default_worker_concurrency: int = 2
    dags_folder: Path | None = None
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.api_port = _free_port()
        self.host = socket.gethostname()
        self.worker_hostnames = {"default": f"cpu-worker-{self.marker[:6]}", "gpu": f"gpu-worker-{self.marker[:6]}"}
        for index in range(1, self.gpu_workers):
            self.worker_hostnames[f"gpu{index}"] = f"gpu{index}-worker-{self.marker[:6]}"

    @property
    def gpu_roles(self) -> list[str]:
        """The roles of the GPU workers (`gpu`, `gpu1`, ...): keys of `worker_hostnames`, service `worker-<role>`."""
        return [role for role in self.worker_hostnames if role.startswith("gpu")]

    # --- configuration -------------------------------------------------------------------------------------
    @property
    def airflow_home(self) -> Path:
        """The shared AIRFLOW_HOME (`<base>/engine/airflow`)."""
        return self.base / "engine" / "airflow"

    @property
    def api_url(self) -> str:
        """The API server's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        """Return the environment every process of the cluster shares (what the compose file's x-airflow-common is)."""
        from cryptography.fernet import Fernet

        from dataengine.runtime import airflow_env

        if not hasattr(self, "_secrets"):
            self._secrets = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_urlsafe(32),
                             "api": secrets.token_urlsafe(16)}
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("AIRFLOW", "DATAENGINE_", "CUDA_VISIBLE_DEVICES", "PYTEST"))}
        venv_bin = str(Path(sys.executable).parent)
        env = {
            **inherited,
            **airflow_env(self.base / "engine"),
            "PATH": venv_bin + os.pathsep + inherited.get("PATH", ""),
            MARKER_ENV: self.marker,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            # keep the +psycopg2 driver: SQLAlchemy 2.1 maps a plain postgresql:// to psycopg 3 (not installed)
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.metadata_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.default_worker_concurrency),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
            "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only manual runs: the @daily schedule must not add a run of its own while the test waits.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "DATAENGINE_GPU_QUEUE": self.gpu_queue,
        }
        if self.dags_folder is not None:
            env["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags_folder)
        if self.heartbeat_timeout is not None:
            env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(self.heartbeat_timeout)
            env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] = "2"
        return env

    def _worker_environment(self, role: str) -> dict[str, str]:
        return {**self.environment(), WORKER_HOSTNAME_ENV: self.worker_hostnames[role],
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.celery_cluster.worker_hostname"}

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    # --- lifecycle -----------------------------------------------------------------------------------------
    def init(self, timeout: float = 240) -> None:
        """Do what `airflow-init` does: migrate the metadata DB, create the pools and the connections."""
        from dataengine.runtime import POOLS

        self.airflow_home.mkdir(parents=True, exist_ok=True)
        script = (
            "import json, sys\n"
            "from airflow.utils.db import initdb\n"
            "from airflow.models.connection import Connection\n"
            "from airflow.models.pool import Pool\n"
            "from airflow.utils.session import create_session\n"
            "pools, connections = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
            "initdb()\n"
            "for name, (slots, description) in pools.items():\n"
            "    Pool.create_or_update_pool(name=name, slots=slots, description=description,"
            " include_deferred=False)\n"
            "with create_session() as session:\n"
            "    for conn_id, fields in connections.items():\n"
            "        session.query(Connection).filter(Connection.conn_id == conn_id).delete()\n"
            "        fields = dict(fields)\n"
            "        extra = fields.pop('extra', None)\n"
            "        session.add(Connection(conn_id=conn_id, extra=json.dumps(extra) if extra else None, **fields))\n"
        )
        log = self.base / "airflow-init.log"
        with open(log, "ab") as out:
            done = subprocess.run([sys.executable, "-c", script, json.dumps(POOLS), json.dumps(self.connections)],
                                  env=self.environment(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  start_new_session=True)
        if done.returncode != 0:
            raise RuntimeError(f"airflow-init failed ({done.returncode}): {log.read_text(errors='replace')[-3000:]}")

    def start(self) -> None:
        """Start the API server, scheduler, DAG processor, the CPU worker and the GPU workers."""
        env = self.environment()
        plan = [
            ("api-server", self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                                         "--workers", "1"), env),
            ("scheduler", self._airflow("scheduler"), env),
            ("dag-processor", self._airflow("dag-processor"), env),
            ("worker-default", self._airflow("celery", "worker", "--queues", "default",
                                             "--concurrency", str(self.default_worker_concurrency),
                                             "--celery-hostname", f"{self.worker_hostnames['default']}@%h",
                                             "--skip-serve-logs", "--without-gossip", "--without-mingle"),
             self._worker_environment("default")),
            *((f"worker-{role}", self._airflow("celery", "worker", "--queues", self.gpu_queue, "--concurrency", "1",
                                               "--celery-hostname", f"{self.worker_hostnames[role]}@%h",
                                               "--skip-serve-logs", "--without-gossip", "--without-mingle"),
               self._worker_environment(role)) for role in self.gpu_roles),
        ]
        for name, args, service_env in plan:
            service = Service(name, args, service_env, self.base / f"{name}.log")
            self.services.append(service)
            service.start()

    def check_alive(self) -> None:
        """Raise with the service's log when one of the cluster's processes has exited (unless killed on purpose)."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None and not service.killed:
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")

    def wait_until_ready(self, dag_id: str, timeout: float = 180) -> dict:
        """Wait until the API answers, `dag_id` is parsed and both workers consume their queues; return the
        workers' queues {celery worker name: [queue, ...]}."""
        deadline = time.monotonic() + timeout
        stage, last = "API server health", None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if stage == "API server health":
                    self.api("GET", "/api/v2/monitor/health")
                    stage = f"DAG {dag_id} parsed"
                if stage.startswith("DAG"):
                    self.api("GET", f"/api/v2/dags/{dag_id}")
                    stage = "workers consuming"
                queues = self.worker_queues()
                wanted = {f"{name}@{self.host}" for name in self.worker_hostnames.values()}
                if wanted <= set(queues):
                    return queues
                last = f"workers online: {sorted(queues)}"
            except Exception as exc:  # noqa: BLE001 - not ready yet: keep polling until the deadline
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1.0)
        raise TimeoutError(f"cluster not ready after {timeout:.0f} s, waiting for {stage} ({last})\n"
                           + self.log_tails())

    def worker_queues(self) -> dict[str, list[str]]:
        """Ask the workers over the broker which queues they consume: {celery worker name: [queue, ...]}."""
        from celery import Celery

        app = Celery(broker=self.redis_url)
        try:
            replies = app.control.inspect(timeout=2.0).active_queues() or {}
        finally:
            app.close()
        return {worker: sorted(q["name"] for q in queues) for worker, queues in replies.items()}

    def service(self, name: str) -> Service:
        """Return the started service called `name` (`scheduler`, `worker-gpu`, `worker-gpu1`, ...)."""
        return next(s for s in self.services if s.name == name)

    # --- REST API ------------------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs):
        """Call the REST API; return the decoded JSON (raise on an HTTP error with the response body)."""
        import httpx

        response = httpx.request(method, self.api_url + path, timeout=30, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def trigger(self, dag_id: str, conf: dict) -> str:
        """Trigger a manual run of `dag_id` with `conf`; return its run id."""
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, fail_fast: bool = True) -> str:
        """Poll the run until it is `success` or `failed`; return the state (TimeoutError past `timeout`).

        With `fail_fast`, a task instance that failed or waits for a retry ends the wait at once with the state
        "failed" (a test's input is deterministic: a retry would fail the same way, only later).
        """
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            if fail_fast and any(ti["state"] in ("failed", "up_for_retry")
                                 for ti in self.task_instances(dag_id, run_id)):
                return "failed"
            time.sleep(2.0)
        summary = ", ".join(f"{t['task_id']}[{t['map_index']}]={t['state']}"
                            for t in self.task_instances(dag_id, run_id))
        raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f} s ({summary})\n" + self.log_tails())

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Return the run's task instances (mapped ones one per map index) as the REST API reports them."""
        found, offset = [], 0
        while True:
            page = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                            params={"limit": 100, "offset": offset})
            found.extend(page["task_instances"])
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return found

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """Return a task instance's log text (as the UI shows it)."""
        data = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                        params={"map_index": map_index}, headers={"Accept": "application/json"})
        content = data.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for item in content:
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(str(item.get("event", item)))
            errors = item.get("error_detail") or []
            lines.extend(f"{error.get('exc_type')}: {error.get('exc_value')}" for error in errors)
        return "\n".join(lines)

    # --- shutdown ------------------------------------------------------------------------------------------
    def stop(self, timeout: float = 45) -> None:
        """Stop every service: SIGTERM to each process group, then SIGKILL to the groups still alive."""
        order = ["scheduler", "worker-default", *(f"worker-{role}" for role in self.gpu_roles), "dag-processor",
                 "api-server"]
        for service in sorted(self.services, key=lambda s: order.index(s.name)):
            service.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in self.services:
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        time.sleep(1.0)  # children of a leader that just exited get a moment to follow it
        for service in self.services:
            if _group_alive(service.process.pid if service.process else None):
                service.signal_group(signal.SIGKILL)
        for service in self.services:
            if service.process is not None and service.process.poll() is None:
                service.process.kill()
                service.process.wait(timeout=10)

    def leftover_processes(self) -> list:
        """Return the psutil processes still alive that carry this cluster's marker in their environment."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid != os.getpid() and proc.environ().get(MARKER_ENV) == self.marker:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def kill_leftovers(self) -> list[str]:
        """SIGKILL the processes `leftover_processes` finds; return their descriptions."""
        import psutil

        described = []
        for proc in self.leftover_processes():
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        return described

    def log_tails(self, chars: int = 2500) -> str:
        """Return the end of every service's log, for failure messages."""
        return "\n".join(f"----- {s.name} ({s.log_path}) -----\n{s.log_tail(chars)}" for s in self.services)


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

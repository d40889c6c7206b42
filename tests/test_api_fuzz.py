"""The annotation API fuzzed from its own OpenAPI schema with schemathesis: every operation, a bounded number of
examples each (schema-valid and schema-violating), over real HTTP on loopback, authenticated as an annotator,
against the real store and the catalog on the local PostgreSQL.

An example's path parameters are the generated ones or real ones (a task the annotator holds, one another
annotator holds, a real batch), so the checks behind the schema are reached too; some get a NUL character put
into every string of their path or body (PostgreSQL refuses NUL in text: found two 5xx that way). What must hold:
no answer is a 5xx, and a refused request (4xx) changes nothing: the catalog's rows and the store's keys (with the
bytes of every small object) are the same before and after it.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from tests.browser_harness import build_engine, open_stage1_batch, open_stage2_batch

# examples per operation and generation mode (more for a longer search: DATAENGINE_API_FUZZ_EXAMPLES=200)
EXAMPLES = int(os.environ.get("DATAENGINE_API_FUZZ_EXAMPLES", "10"))
pytestmark = [pytest.mark.timeout(600), pytest.mark.postgres]
SMALL_OBJECT = 256 * 1024


class Workbench:
    """The engine under fuzzing: leases for the annotator, and snapshots of everything a request could change."""

    def __init__(self, engine: dict, annotator: str):
        from sqlalchemy import MetaData

        self.engine, self.annotator = engine, annotator
        self.catalog, self.store = engine["catalog"], engine["store"]
        self.tables = MetaData()
        self.tables.reflect(self.catalog.engine)
        self.batches = [open_stage1_batch(engine, "fuzz-stage1"), open_stage2_batch(engine, "fuzz-stage2")]
        self.reopened = 0

    def leased_task(self, batch: str, annotator: str | None = None) -> str:
        """Return a task of `batch` leased now to `annotator` (default: the fuzzer; a new batch when it is done)."""
        from dataengine.catalog import utcnow

        annotator = annotator or self.annotator
        for task in self.catalog.list_tasks(batch):
            if task.assignee == annotator and task.status == "leased" and task.lease_expires_at > utcnow():
                return task.task_id
        task = self.catalog.claim_next_task(batch, annotator, lease_seconds=600)
        if task is None:
            self.reopened += 1
            again = f"{batch.split('-again')[0]}-again{self.reopened}"
            self.catalog.open_tasks("stage1", again, self.engine["images"])
            self.batches[self.batches.index(batch)] = again
            return self.leased_task(again, annotator)
        return task.task_id

    def state(self) -> dict:
        """Return every catalog row and every store key (with the digest of each small object)."""
        from sqlalchemy import select

        with self.catalog.engine.connect() as connection:
            rows = {table.name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
                    for table in self.tables.sorted_tables}
        objects = {}
        for key in self.store.list(""):
            size = self.store.size(key)
            objects[key] = (size, hashlib.sha256(self.store.get_bytes(key)).hexdigest() if size < SMALL_OBJECT
                            else None)
        return {"rows": rows, "objects": objects}


def difference(before: dict, after: dict) -> list[str]:
    """Return what changed between two snapshots, one line per table or key."""
    changed = [f"table {name}" for name in before["rows"] if before["rows"][name] != after["rows"].get(name)]
    keys = set(before["objects"]) | set(after["objects"])
    changed += [f"key {key}" for key in sorted(keys) if before["objects"].get(key) != after["objects"].get(key)]
    return changed


def with_nul(value):
    """Return `value` with a NUL character inserted into every string in it (PostgreSQL refuses NUL in text)."""
    if isinstance(value, str):
        return value[:1] + "\x00" + value[1:]
    if isinstance(value, list):
        return [with_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: with_nul(v) for k, v in value.items()}
    return value


def fuzz_operation(operation, mode, url: str, headers: dict, bench: Workbench) -> tuple[list[str], dict]:
    """Send EXAMPLES generated requests of one operation (twice: generated and real path parameters)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    problems, statuses = [], {}
    path_names = [name for name in ("task_id", "batch") if "{" + name + "}" in operation.path]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode), real=st.sampled_from(["no", "mine", "mine", "another's"]),
           batch_index=st.integers(0, 1), nul=st.sampled_from(["none", "none", "path", "body"]))
    def send(case, real, batch_index, nul):
        if real != "no" and path_names:
            batch = bench.batches[batch_index]
            holder = bench.annotator if real == "mine" else "someone-else"
            real_values = {"batch": batch, "task_id": bench.leased_task(batch, holder)}
            case.path_parameters = {**(case.path_parameters or {}), **{n: real_values[n] for n in path_names}}
        if nul == "path" and case.path_parameters:
            case.path_parameters = with_nul(case.path_parameters)
        elif nul == "body" and isinstance(case.body, dict):
            case.body = with_nul(case.body)
        before = bench.state()
        response = case.call(base_url=url, headers=headers, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        where = f"{case.method} {case.formatted_path} body={str(case.body)[:300]!r} query={case.query!r}"
        if response.status_code >= 500:
            problems.append(f"{response.status_code} for {where}: {response.text[:300]}")
        elif response.status_code >= 400:
            changed = difference(before, bench.state())
            if changed:
                problems.append(f"refused ({response.status_code}) but changed {changed} for {where}")

    try:
        send()
    except Unsatisfiable:
        statuses["no examples"] = 1
    return problems, statuses


def test_fuzzed_api_never_answers_5xx_and_a_refused_request_changes_nothing(tmp_path, pg_url):
    import schemathesis
    from schemathesis.generation import GenerationMode

    from dataengine.service import create_app
    from dataengine.service.auth import TokenStore, token_auth
    from dataengine.service.server import ServiceThread

    engine = build_engine(tmp_path / "engine", scenes=2, db_url=pg_url)
    tokens = TokenStore(tmp_path / "tokens.json")
    headers = {"Authorization": f"Bearer {tokens.issue('fuzzer')}"}
    bench = Workbench(engine, "fuzzer")
    with ServiceThread(create_app(engine["store"], engine["catalog"], token_auth(tokens), torch_threads=1)) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        schema.config.generation.update(with_security_parameters=False)   # credentials: tests/test_access.py
        operations = [result.ok() for result in schema.get_all_operations()]
        report, problems = {}, []
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                found, statuses = fuzz_operation(operation, mode, server.url, headers, bench)
                report[f"{operation.method.upper()} {operation.path} {mode.value}"] = statuses
                problems += found
    paths = {operation.path for operation in operations}
    assert {"/api/tasks/{task_id}/submit", "/api/tasks/{task_id}/predict", "/api/batches/{batch}/claim",
            "/api/monitoring"} <= paths, sorted(paths)
    sent = sum(n for statuses in report.values() for code, n in statuses.items() if isinstance(code, int))
    print(f"\nfuzzed {len(operations)} operations, {sent} requests: " + "; ".join(
        f"{name}: {statuses}" for name, statuses in sorted(report.items())))
    assert not problems, "\n".join(problems[:40])
    assert sent >= len(operations) * EXAMPLES
    # the real path parameters reached the routes' own checks, past authentication and lookup
    answered = {code for name, statuses in report.items() if name.endswith("positive") for code in statuses}
    assert {200, 403, 404, 422} <= answered and 401 not in answered, report

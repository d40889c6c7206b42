"""DAG integrity: import errors, parse cost, and the conventions every DAG of the engine keeps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("torch", "cv2", "great_expectations", "pandas", "pycocotools", "segment_anything", "sklearn")

# Each DAG file is parsed in a fresh interpreter after `airflow.sdk` is imported (that import is the same for
# every file and is not the file's cost); the file itself must then take well under a second.
_PARSE_PROBE = r"""
import json, runpy, sys, time
import airflow.sdk  # noqa: F401  (common to every DAG file)
before = set(sys.modules)
t0 = time.perf_counter()
runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "new_modules": sorted(set(sys.modules) - before)}))
"""


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()


def test_dags_folder_holds_the_stage_dags():
    assert DAG_FILES, "dags/ holds no DAG file"


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert dagbag.dags, "no DAG was collected from dags/"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(dag_file):
    out = subprocess.run([sys.executable, "-c", _PARSE_PROBE, str(dag_file)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in probe["new_modules"] if m.split(".")[0] in HEAVY_MODULES]
    assert not heavy, f"{dag_file.name} imports heavy modules at parse time: {sorted(set(heavy))[:10]}"
    assert probe["seconds"] < 1.0, f"{dag_file.name} took {probe['seconds']:.2f} s to parse"


def test_every_dag_keeps_the_conventions(dagbag):
    from dataengine.runtime import POOLS

    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        if not dag.doc_md:
            problems.append(f"{dag_id}: no doc_md")
        if not dag.default_args.get("owner") or dag.default_args.get("owner") == "airflow":
            problems.append(f"{dag_id}: no owner in default_args")
        if "retries" not in dag.default_args:
            problems.append(f"{dag_id}: no default retries")
        for task in dag.tasks:
            if task.pool not in POOLS and task.pool != "default_pool":
                problems.append(f"{dag_id}.{task.task_id}: pool {task.pool!r} is not created by the set-up")
    assert not problems, "\n".join(problems)

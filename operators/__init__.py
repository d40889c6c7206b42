"""Airflow adapters for the data engine: hooks resolve connections, operators call `dataengine`.

Nothing here imports torch, pandas or great_expectations at module level: DAG files import this package.
"""
import os

# The Celery queue GPU operators are sent to; GPU workers consume only this queue (`celery worker -q gpu -c 1`).
GPU_QUEUE = os.environ.get("DATAENGINE_GPU_QUEUE", "gpu")
# The pool that serialises GPU work on a box (slots = GPUs); created by `dataengine init` / airflow-init.
GPU_POOL = "gpu"

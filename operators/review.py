"""Human approval before publication (Airflow's human-in-the-loop ApprovalOperator), off by default."""
from __future__ import annotations

from datetime import timedelta


def approve_release(subject: str, task_id: str = "approve_release", timeout: timedelta = timedelta(days=2)):
    """Return an ApprovalOperator: Approve publishes, Reject skips publication, no answer fails the task."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator(
        task_id=task_id,
        task_display_name="Approve publication",
        subject=subject,
        body="Gate and gold results are in the upstream tasks' logs and under the run's report key "
             "(`runs/<dag_id>/<run_id>/reports/`). Approve to publish the release, reject to withhold it.",
        response_timeout=timeout,
    )

"""Human approval before an irreversible step (Airflow's human-in-the-loop ApprovalOperator), off by default:
publishing a release, or promoting a retrained model to production."""
from __future__ import annotations

from datetime import timedelta

RELEASE_BODY = ("Gate and gold results are in the upstream tasks' logs and under the run's report key "
                "(`runs/<dag_id>/<run_id>/reports/`). Approve to publish the release, reject to withhold it.")
PROMOTION_BODY = ("The side-by-side gold evaluation of the candidate and the production model is in the "
                  "`evaluate` task's log and at `runs/sa_retrain/<run_id>/reports/evaluation.json`; the gate's "
                  "reasons are in `promotion_gate`. Approve to make the candidate production, reject to keep it "
                  "as a candidate.")


def approve(subject: str, body: str = RELEASE_BODY, task_id: str = "approve_release",
            display_name: str = "Approve publication", timeout: timedelta = timedelta(days=2)):
    """Return an ApprovalOperator: Approve lets the next step run, Reject skips it, no answer fails the task."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator(task_id=task_id, task_display_name=display_name, subject=subject, body=body,
                            response_timeout=timeout)


def approve_release(subject: str, task_id: str = "approve_release", timeout: timedelta = timedelta(days=2)):
    """Return the approval of a release: Approve publishes, Reject skips publication, no answer fails the task."""
    return approve(subject, RELEASE_BODY, task_id, "Approve publication", timeout)


def approve_promotion(subject: str, task_id: str = "approve_promotion", timeout: timedelta = timedelta(days=2)):
    """Return the approval of a model promotion: Approve promotes, Reject keeps the candidate."""
    return approve(subject, PROMOTION_BODY, task_id, "Approve the promotion", timeout)

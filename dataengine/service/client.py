"""A small HTTP client of the annotation service (what the simulated annotators and the tests use).

`AnnotationClient(url, token)` speaks the JSON API of `dataengine.service.app`: `url` is the service root
(`http://127.0.0.1:8765` standalone, `http://host:8080/dataengine` inside Airflow) and `token` a bearer token
(an annotator token, or an Airflow JWT when mounted in Airflow). Connection failures and 5xx answers are
retried with backoff (every call is safe to repeat: submit is idempotent by its submission id); a 4xx answer
raises `ServiceRequestError` at once with the service's explanation.
"""
from __future__ import annotations

import time


class ServiceRequestError(RuntimeError):
    """The service refused a request: `status` is the HTTP status, `detail` its explanation."""

    def __init__(self, method: str, path: str, status: int, detail):
        super().__init__(f"{method} {path} -> {status}: {detail}")
        self.status, self.detail = status, detail


class AnnotationClient:
    """Calls the annotation service's API as one annotator."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.5, headers: dict | None = None):
        import httpx

        self.url = url.rstrip("/")
        auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers={**auth_headers, **(headers or {})})
        self.retries, self.backoff = retries, backoff

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, json=None, raw: bool = False):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=json)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if response.status_code >= 500 and attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if response.status_code >= 400:
                try:
                    detail = response.json().get("detail")
                except ValueError:
                    detail = response.text
                raise ServiceRequestError(method, path, response.status_code, detail)
            return response.content if raw else response.json()
        raise AssertionError("unreachable")

    # API -----------------------------------------------------------------------------------------------
    def me(self) -> str:
        """Return the annotator name the service authenticated."""
        return self._call("GET", "/api/me")["annotator"]

    def batches(self) -> list[dict]:
        """Return every batch with its counts."""
        return self._call("GET", "/api/batches")

    def progress(self, batch: str) -> dict:
        """Return the batch's counts, effort and the caller's share."""
        return self._call("GET", f"/api/batches/{batch}/progress")

    def claim(self, batch: str, lease_seconds: float | None = None) -> dict:
        """Claim the next task: {task, reason, progress} (`task` None with a reason when there is none)."""
        return self._call("POST", f"/api/batches/{batch}/claim", json={"lease_seconds": lease_seconds})

    def task(self, task_id: str) -> dict:
        """Return the task view (image size, pre-filled and accepted masks)."""
        return self._call("GET", f"/api/tasks/{task_id}")

    def image(self, task_id: str) -> bytes:
        """Return the task's JPEG bytes."""
        return self._call("GET", f"/api/tasks/{task_id}/image", raw=True)

    def renew(self, task_id: str, lease_seconds: float | None = None) -> dict:
        """Renew the lease on a task."""
        return self._call("POST", f"/api/tasks/{task_id}/lease", json={"lease_seconds": lease_seconds})

    def release(self, task_id: str) -> dict:
        """Give a task back to the queue."""
        return self._call("POST", f"/api/tasks/{task_id}/release")

    def predict(self, task_id: str, points=(), labels=(), box=None, mask_input: str | None = None,
                multimask: bool = True) -> dict:
        """Return {candidates: [{segmentation, predicted_iou, area, bbox, logits}], best, ...} for a prompt."""
        body = {"points": [[float(x), float(y)] for x, y in points], "labels": [int(v) for v in labels],
                "box": None if box is None else [float(v) for v in box], "mask_input": mask_input,
                "multimask": bool(multimask)}
        return self._call("POST", f"/api/tasks/{task_id}/predict", json=body)

    def save_draft(self, task_id: str, masks: list[dict], rejected_prefill=()) -> dict:
        """Save the masks accepted so far."""
        return self._call("PUT", f"/api/tasks/{task_id}/draft",
                          json={"masks": masks, "rejected_prefill": list(rejected_prefill)})

    def submit(self, task_id: str, submission_id: str, masks: list[dict], rejected_prefill=(),
               overhead_seconds: float = 0.0) -> dict:
        """Submit the image's masks (stored once per `submission_id`, so a retry is safe)."""
        return self._call("POST", f"/api/tasks/{task_id}/submit",
                          json={"submission_id": submission_id, "masks": masks,
                                "rejected_prefill": list(rejected_prefill), "overhead_seconds": overhead_seconds})

    def skip(self, task_id: str, code: str, reason: str | None = None) -> dict:
        """Skip the image with a reason code and text."""
        return self._call("POST", f"/api/tasks/{task_id}/skip", json={"code": code, "reason": reason})


__all__ = ["AnnotationClient", "ServiceRequestError"]

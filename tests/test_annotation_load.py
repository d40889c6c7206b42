"""A short version of bench/annotation_load.py: 10 simulated annotators for 10 s against one annotation service
(its own process) on loopback. Every claim, submission and request is audited: no task handed to two
annotators at once, no acknowledged submission missing from the catalog or the store, no error."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(600)
ANNOTATORS, SECONDS = 10, 10


def test_ten_annotators_for_ten_seconds_lose_nothing_and_never_share_a_task(tmp_path):
    figures_path = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "annotation_load.py"), "--annotators", str(ANNOTATORS),
                           "--seconds", str(SECONDS), "--images", "8", "--replicas", "2", "--json", str(figures_path)],
                          capture_output=True, text=True, timeout=540, cwd=REPO)
    assert figures_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(figures_path.read_text())
    print(done.stdout)
    assert figures["claims"] >= ANNOTATORS and figures["predictions"] >= ANNOTATORS
    assert figures["submitted"] + figures["skipped"] >= ANNOTATORS     # every annotator finished an image
    assert figures["acknowledged"] == figures["submitted"] == figures["stored"]
    assert (figures["double_claims"], figures["lost_submissions"], figures["duplicate_submissions"],
            figures["unacknowledged_stored"], figures["lost_leases"], figures["errors"]) == (0, 0, 0, 0, 0, 0), figures
    assert figures["predict_round_trip_ms"]["p50"] > 0 and figures["predict_server_ms"]["p95"] > 0
    assert done.returncode == 0, done.stdout[-3000:]

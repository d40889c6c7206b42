"""No credential in the repository: every file git tracks is searched for anything that looks like one.

Two tiers. Real-looking credentials (cloud access key ids, private keys, annotator tokens, JWTs, GitHub and
Slack tokens) may appear nowhere, tests included. Literal passwords and secrets (an assignment with a quoted
value, a URL with a password in it) may appear only in tests/: the throw-away servers the tests start need
made-up keys (tests/fixtures_services.py), and nothing outside tests/ may carry one. Placeholders
(`${VAR}`, `$VAR`, `<password>`, `...`, `CHANGE_ME`, a variable's name) are not credentials. A secret-bearing file (`.env`, a token or
password file of the embedded runtime, a key file) may not be tracked at all.
The figure of docs/reliability.md ("No secret in the repository") comes from here (`pytest -s`).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ANYWHERE = {
    "cloud access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "annotator token": re.compile(r"\bdea_[A-Za-z0-9_-]{40,}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
}
OUTSIDE_TESTS = {
    "quoted password or secret": re.compile(
        r"(?i)\b[a-z_]*(password|passwd|secret|secret_key|access_key|api_key|token)[\"']?\s*[:=]\s*[\"']"
        r"(?P<value>[^\"'\s]{8,})[\"']"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?P<value>[^@\s/'\"]{3,})@"),
}
# Not values: variable references (`${VAR}`, `$VAR`), `<password>`, `...`, `CHANGE_ME...`, names of variables
# (`catalog_password` in psql's `PASSWORD :'catalog_password'`).
PLACEHOLDER = re.compile(r"^(\$.*|<[^>]*>|\.\.\.|CHANGE_ME.*|\*+|x+|your[-_].*|example.*|\{.*\}|"
                         r"(?-i:[a-z_]*(password|secret|token|key)[a-z_]*))$", re.IGNORECASE)
SECRET_FILES = re.compile(r"(^|/)(\.env|.*\.pem|.*\.key|id_rsa.*|annotator_tokens\.json|"
                          r"simple_auth_manager_passwords\.json.*|.*credentials.*\.json)$")


def tracked_files() -> list[str]:
    """Return the paths git tracks in the checkout."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [path for path in listing.decode().split("\0") if path]


def credentials_in(text: str, patterns: dict) -> list[tuple[str, str]]:
    """Return (kind, match) for each credential-looking string in `text` that is not a placeholder."""
    found = []
    for kind, pattern in patterns.items():
        for match in pattern.finditer(text):
            value = match.groupdict().get("value") or match.group(0)
            if not PLACEHOLDER.match(value):
                found.append((kind, match.group(0)[:80]))
    return found


def test_the_patterns_find_what_they_look_for():
    # (built from pieces, so that this file does not hold what it looks for)
    samples = ['aws_secret_access_key = "wJalrXUtnFEMIbPxRfiCYzEXAMPLEKEYxx"', "AKIA" + "IOSFODNN7EXAMPLE",
               "postgresql://app:s3cr3t-pass@db:5432/x", "-----BEGIN RSA " + "PRIVATE KEY-----",
               "dea_" + "A" * 43, 'PASSWORD: "hunter22hunter22"']
    assert all(credentials_in(sample, {**ANYWHERE, **OUTSIDE_TESTS}) for sample in samples)
    placeholders = ["postgresql://airflow:${AIRFLOW_DB_PASSWORD:?set it}@postgres:5432/airflow",
                    "postgresql+psycopg2://dataengine:...@postgres:5432/dataengine", 'password: "<password>"',
                    'MINIO_ROOT_PASSWORD="CHANGE_ME_minio"']
    assert not any(credentials_in(sample, {**ANYWHERE, **OUTSIDE_TESTS}) for sample in placeholders)


def test_no_credential_is_tracked_in_the_repository():
    files = tracked_files()
    assert len(files) > 50 and "tests/fixtures_services.py" in files
    tracked_secret_files = [path for path in files if SECRET_FILES.search(path)]
    assert tracked_secret_files == []
    found, scanned = [], 0
    for path in files:
        data = (REPO / path).read_bytes() if (REPO / path).is_file() else b""
        if b"\0" in data[:8192]:
            continue                                      # binary (the shipped checkpoint): no text to leak
        scanned += 1
        text = data.decode("utf-8", errors="replace")
        patterns = ANYWHERE if path.startswith("tests/") else {**ANYWHERE, **OUTSIDE_TESTS}
        found += [(path, kind, match) for kind, match in credentials_in(text, patterns)]
    assert found == [], found
    print(f"FIGURE secrets: {scanned} tracked text files searched for {len(ANYWHERE) + len(OUTSIDE_TESTS)} kinds of "
          f"credential ({len(ANYWHERE)} anywhere, {len(OUTSIDE_TESTS)} outside tests/), 0 secret files tracked: "
          "0 found")

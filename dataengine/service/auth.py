"""Annotator tokens for the standalone service (`dataengine serve`): issued per annotator, stored hashed.

Tokens live in `$DATAENGINE_HOME/annotator_tokens.json` as SHA-256 digests (a token is 32 random bytes, so a
plain digest is as good as a slow hash and keeps verification cheap); the token itself is shown once, when it
is issued (`dataengine serve --issue-token NAME`). Issuing again for the same name replaces (revokes) the old
token. Inside Airflow the service uses Airflow's own login instead (see `plugins/dataengine_plugin.py`).

`token_auth(tokens)` returns the FastAPI dependency `create_app` takes: it reads `Authorization: Bearer <token>`
(or the `dataengine_token` cookie, for the browser tool) and returns the annotator's name, else answers 401.
"""

import fcntl
import hashlib
import json
import os
import re
import secrets
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

TOKEN_FILE = "annotator_tokens.json"
TOKEN_PREFIX = "dea_"
COOKIE_NAME = "dataengine_token"
ANNOTATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def check_annotator_name(name: str) -> str:
    """Return `name` if it is a valid annotator name (1-128 of letters, digits, `._@-`); else ValueError."""
    if not isinstance(name, str) or not ANNOTATOR_NAME.match(name):
        raise ValueError(f"invalid annotator name {name!r}: expected 1-128 letters, digits or . _ @ - "
                         "(starting with a letter or digit)")
    return name


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Per-annotator tokens kept hashed in a JSON file (default `$DATAENGINE_HOME/annotator_tokens.json`)."""

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            from dataengine import config

            path = config.engine_home() / TOKEN_FILE
        self.path = Path(path)
        self._cache: tuple[tuple, dict[str, str]] | None = None

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"annotators": {}}
        except ValueError as exc:
            raise ValueError(f"{self.path}: not a token file ({exc})") from None
        if not isinstance(data.get("annotators"), dict):
            raise ValueError(f"{self.path}: no 'annotators' object")
        return data

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def issue(self, name: str) -> str:
        """Create a token for annotator `name` (replacing any earlier one); return it (shown only now)."""
        check_annotator_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            data = self._read()
            data["annotators"][name] = {"sha256": _digest(token),
                                        "issued_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self._write(data)
        self._cache = None
        return token

    def revoke(self, name: str) -> bool:
        """Remove the annotator's token; return whether there was one."""
        with self._locked():
            data = self._read()
            removed = data["annotators"].pop(name, None) is not None
            if removed:
                self._write(data)
        self._cache = None
        return removed

    def annotators(self) -> dict[str, str]:
        """Return {annotator name: issued_at} of every annotator holding a token."""
        return {name: entry.get("issued_at", "") for name, entry in sorted(self._read()["annotators"].items())}

    def verify(self, token: str | None) -> str | None:
        """Return the annotator name a token belongs to, or None."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cache is None or self._cache[0] != stamp:
            by_digest = {entry["sha256"]: name for name, entry in self._read()["annotators"].items()}
            self._cache = (stamp, by_digest)
        digest = _digest(token)
        for known, name in self._cache[1].items():
            if secrets.compare_digest(known, digest):
                return name
        return None


def token_auth(tokens: TokenStore):
    """Return a FastAPI dependency that authenticates an annotator by token and returns their name."""
    from fastapi import Depends, HTTPException, Request
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, scheme_name="AnnotatorToken",
                        description="Per-annotator token issued with `dataengine serve --issue-token NAME`")

    def annotator(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        token = credentials.credentials if credentials is not None else request.cookies.get(COOKIE_NAME)
        name = tokens.verify(token)
        if name is None:
            problem = "invalid or revoked annotator token" if token else "no annotator token"
            raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                detail=f"{problem}: send 'Authorization: Bearer <token>' (issue one with "
                                       "`dataengine serve --issue-token NAME`)")
        return name

    return annotator


__all__ = ["TokenStore", "token_auth", "check_annotator_name", "TOKEN_FILE", "COOKIE_NAME"]

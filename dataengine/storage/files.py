"""The object store in a local folder (`file:///path`): the embedded default.

Writes go to a hidden temporary file beside the target, then `os.replace`, so an object appears whole or not at
all; listing skips those temporary files and yields keys in the lexical order S3 uses.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from dataengine.storage.interface import NotFound, ObjectStore, check_key


class FileStore(ObjectStore):
    """A store in a local folder (`file:///path`). Writes go to a temporary file, then `os.replace`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: str | os.PathLike) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return self.url(key)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        source = self._path(key)
        if not source.is_file():
            raise NotFound(self.url(key))
        shutil.copyfile(source, path)
        return Path(path)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(self.url(key)) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        # Keys come out in the same lexical order S3 uses: a folder `d` sorts as `d/` among its siblings,
        # so a depth-first walk with that sort key yields sorted keys holding one folder listing at a time.
        yield from self._walk(self.root, "", prefix.lstrip("/"))

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as scan:
                ranked = sorted(((e.name + "/" if e.is_dir() else e.name, e) for e in scan), key=lambda pair: pair[0])
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in ranked:
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and not (name.startswith(".") and name.endswith(".tmp")):
                yield key

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def copy(self, src: str, dst: str) -> str:
        source = self._path(src)
        if not source.is_file():
            raise NotFound(self.url(src))
        return self.put_file(dst, source)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(self.url(key))
        return path.stat().st_size


__all__ = ["FileStore"]

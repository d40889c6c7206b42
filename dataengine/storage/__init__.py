"""Object store: one interface for bytes (images, embeddings, masks, models, releases), two backends.

The package is layered so that nothing imports back up:
- `interface.py`: `ObjectStore` (the operations), `NotFound`, `StoreError`, key checking (`check_key`,
  `check_segment`: nothing built from user input leaves the store's folder or prefix);
- `files.py`: `FileStore`, a local folder (`file:///path`, the embedded default);
- `s3.py`: `S3Store`, `s3://bucket/prefix` through the MinIO SDK;
- `uris.py`: `open_store(uri)` picks the backend by URI scheme; `split_uri`, `read_uri` for full object URIs.
The public names are re-exported here (`from dataengine.storage import open_store, NotFound`); `S3Store` is
imported from `dataengine.storage.s3`, so that opening a folder store never loads the MinIO SDK.
"""
from dataengine.storage.files import FileStore
from dataengine.storage.interface import NotFound, ObjectStore, StoreError, check_key, check_segment
from dataengine.storage.uris import open_store, read_uri, split_uri

__all__ = ["NotFound", "StoreError", "ObjectStore", "FileStore", "open_store", "split_uri", "read_uri", "check_key",
           "check_segment"]

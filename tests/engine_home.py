"""`engine_home(folder)`: point the engine (DATAENGINE_HOME) at a throw-away home for a module's fixture."""
from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def engine_home(folder):
    """Set DATAENGINE_HOME to `folder` and yield (its store, its catalog); restore the previous value after."""
    from dataengine.catalog import open_catalog
    from dataengine.storage import open_store

    previous = os.environ.get("DATAENGINE_HOME")
    os.environ["DATAENGINE_HOME"] = str(folder)
    try:
        yield open_store(), open_catalog()
    finally:
        if previous is None:
            os.environ.pop("DATAENGINE_HOME", None)
        else:
            os.environ["DATAENGINE_HOME"] = previous

"""GPU operators: automatic mask generation on one shard of images."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import BaseOperator

from operators import GPU_POOL, GPU_QUEUE


class AutoMaskOperator(BaseOperator):
    """Runs automatic mask generation (stage 3) on one shard of images; returns the shard's output keys.

    torch and the model are loaded inside `execute`, on the worker. The shard's SA-1B records and its Parquet
    mask table are written to the store; XCom carries only their keys and counts.
    """

    template_fields = ("shard", "model", "settings")
    ui_color = "#f3d9b1"

    @classmethod
    def gpu_defaults(cls, kwargs: dict) -> dict:
        """Fill in the GPU routing and retry defaults (used by both the constructor and `partial`)."""
        kwargs.setdefault("pool", GPU_POOL)
        kwargs.setdefault("queue", GPU_QUEUE)
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        kwargs.setdefault("retry_exponential_backoff", 2.0)
        kwargs.setdefault("execution_timeout", timedelta(hours=2))
        kwargs.setdefault("map_index_template", "shard {{ task.shard['shard'] }}")
        return kwargs

    @classmethod
    def partial(cls, **kwargs):
        """Mapped instances take their pool, queue and timeouts from `partial`, not from `__init__`."""
        return super().partial(**cls.gpu_defaults(kwargs))

    def __init__(self, *, shard: dict, model: dict, settings: dict, **kwargs):
        super().__init__(**self.gpu_defaults(kwargs))
        self.shard, self.model, self.settings = shard, model, settings

    def execute(self, context):
        from dataengine.model.registry import load_resolved
        from dataengine.pipeline.automatic import mask_generator, run_prefix, segment_shard
        from operators.hooks import EngineStoreHook

        store = EngineStoreHook().get_store()
        sam = load_resolved(store, self.model)
        generator = mask_generator(sam, **{**self.settings, "output_mode": "coco_rle"})
        prefix = run_prefix(context["dag"].dag_id, context["run_id"])
        result = segment_shard(store, self.shard["key"], generator, self.model["version_id"], prefix)
        self.log.info("shard %s: %s images, %s masks in %.1f s with %s", result["shard"], result["images"],
                      result["masks"], result["seconds"], self.model["version_id"])
        return result

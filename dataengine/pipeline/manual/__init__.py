"""Stages 1 and 2, assisted-manual and semi-automatic: the engine steps the stage DAGs run around the people.

select a batch -> compute its embeddings (GPU) -> [stage 2: pre-fill confident masks (GPU)] -> open tasks
(a share of images given to two annotators) -> wait until the batch is done -> collect the submissions into a
table -> quality gate -> gold comparison -> agreement -> publish the accepted masks.

Plain functions over a store and a catalog, returning small JSON-able dicts (keys and counts). Every output is
a deterministic function of the batch and the submissions, so a retried step rewrites the same keys.

One module per concern, in the order a run uses them: `stages` (stage names, the 30 s rule, batch names),
`selection`, `embeddings`, `prefill` (stage 2), `tasks` (opening and waiting), `collection` (the submission
table), `effort` (effort accounting), `quality` (gate, gold comparison, agreement), `publication`. The public
names are re-exported here.
"""
from dataengine.pipeline.manual.collection import SUBMISSION_COLUMNS, collect_submissions, submission_rows
from dataengine.pipeline.manual.effort import effort_figures
from dataengine.pipeline.manual.embeddings import compute_embeddings
from dataengine.pipeline.manual.prefill import PREFILL_STRICTNESS, prefill_images, prefill_settings
from dataengine.pipeline.manual.publication import annotation_record, event_extra, publish_annotations
from dataengine.pipeline.manual.quality import (compare_submissions_with_gold, gate_submissions, measure_agreement,
                                                submission_checks)
from dataengine.pipeline.manual.selection import backlog, in_other_batches, select_batch
from dataengine.pipeline.manual.stages import MANUAL_STAGES, SLOW_MASK_SECONDS, batch_name_for, check_stage
from dataengine.pipeline.manual.tasks import batch_status, describe_stall, doubly_annotated, open_batch

__all__ = ["check_stage", "batch_name_for", "backlog", "in_other_batches", "select_batch", "compute_embeddings",
           "prefill_settings", "prefill_images", "doubly_annotated", "open_batch", "batch_status", "describe_stall",
           "collect_submissions", "submission_rows", "effort_figures", "submission_checks", "gate_submissions",
           "compare_submissions_with_gold", "measure_agreement", "annotation_record", "publish_annotations",
           "event_extra", "SUBMISSION_COLUMNS", "SLOW_MASK_SECONDS", "MANUAL_STAGES", "PREFILL_STRICTNESS"]

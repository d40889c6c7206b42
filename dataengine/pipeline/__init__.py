"""Stage pipelines as plain functions over a store and a catalog: what the stage DAGs' operators call."""

"""Dataset formats: SA-1B per-image JSON (`sa1b`), SA-1B tar shards (`shards`), COCO instances export (`coco`).

See docs/formats.md for the schemas and conventions (bbox w/h = max - min, as the official generator writes).
"""

"""Ingestion: real datasets (COCO instances) and model predictions (COCO results or Parquet)
brought into the data folder beside the synthetic batches, versioned by content and queried
through the same DuckDB views (docs/real-data.md).

Everything from outside is validated before anything is written: a bad file gives an
``IngestError`` naming each bad row and leaves the data folder as it was.
"""

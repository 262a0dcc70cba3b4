"""Storage: the data folder's layout (inbox, batches, archives, tables) and the DuckDB views
over its Parquet label tables, local or on S3."""

"""The Vario platform: everything between a generator and a dataset, with no Dagster in it.

``batch`` turns a spec into jobs and shards (specs, samplers, planning); ``run`` renders a
shard's jobs in worker processes, resumably; ``store`` is the data folder's layout and the
DuckDB views over its label tables; ``quality`` holds the dataset tests and their report;
``settings`` is the one place environment variables are read. Dagster assets
(``assets_defs``) and the CLI (``dagster_project``) call into it; it calls into the generator
SDK (``generators``) and never the other way.
"""

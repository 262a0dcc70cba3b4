"""The HTTP API (FastAPI): generators, batches, jobs, archives and queries for programs on
other machines, started by ``vario serve``.

``app.py`` builds the application (routers, error responses, the body size cap);
``keys.py`` makes and checks API keys; ``auth.py`` is the dependency every route declares
(a key of the scope it needs, within its rate); ``problems.py`` turns every error into
``application/problem+json``; ``status.py`` reads a batch's progress from the data folder;
``routers/`` holds one module per resource. The API calls the same platform functions as the
CLI (planning, the inbox, the query sandbox) and never Dagster: the daemon that ``vario
serve`` starts picks up what it submits.
"""

"""One router per resource: ``generators``, ``batches``, ``exports``, ``jobs``, ``query``."""

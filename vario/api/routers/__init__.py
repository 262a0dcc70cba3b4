"""One router per resource: ``generators``, ``batches``, ``jobs``, ``query``."""

"""Running shards: a shard's jobs in a pool of worker processes, resumably, and the
shard's label tables assembled in manifest order."""

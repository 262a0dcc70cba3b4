"""Batches: the spec a user submits, the samplers that cover its ranges, and planning into
validated jobs grouped in shards."""

"""Model evaluation: predictions scored against ground truth per slice (metrics), model unit
tests, and targeted regeneration."""

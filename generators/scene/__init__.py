"""The scene description and what builds one: typed objects, lights, camera and timing
(``description``), the offline asset catalog, geometry helpers (frames, quaternions,
projection) and placement helpers that take an explicit random generator."""

"""The built-in generators: ``tabletop`` (a narrow domain, a robot work cell) and
``falling_objects`` (a wide, MOVi-style domain with collisions)."""

"""Renderers behind one small interface: ``base`` (what a renderer returns, the shared render
settings), ``tiny`` (PyBullet's CPU renderer), ``cycles`` (Kubric and Blender Cycles, with
``kubric_compat`` for Blender 4.2), ``select`` (the choice) and ``isolation`` (running a job in
a worker process of its own, with a time limit)."""

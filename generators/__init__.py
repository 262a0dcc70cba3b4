"""The generator SDK: what a generator author uses, and the built-in generators.

``contract`` says what a generator is (name, version, parameter model, domain) and finds the
installed ones; ``params`` holds the typed, ranged, documented parameter models; ``scene``
is the one scene description (objects, lights, camera) with the asset catalog and placement
helpers; ``randomize`` the domain randomizers that change a scene before it is simulated
(textures, materials, lights, camera, backgrounds, distractors, sensor noise); ``sim``
simulates it with PyBullet; ``render`` turns it into images (PyBullet's tiny renderer, or
Kubric and Blender Cycles in isolated workers); ``labels`` computes boxes, masks, occlusion
and the label tables and writes them with the frames into one atomic archive; ``library``
holds the built-in generators; ``job`` puts these steps together for one job. Nothing here
imports Dagster or the platform package ``vario``.
"""

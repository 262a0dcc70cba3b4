"""Domain randomization: reusable parts that change a scene description before it is
simulated and rendered (Tobin et al. 2017; Tremblay et al. 2018).

Each randomizer is a parameter model with typed, ranged, documented fields (a generator's
parameter model inherits the ones it uses, so a batch samples them like any other
parameter) and a function that takes a scene and returns it changed:

- ``surfaces``: textures (procedural or from a folder, ``textures``) and materials
  (roughness, metallic, specular) on objects, distractors and surfaces;
- ``lights``: one to N lights (sun, point, area) on a shell, intensity, colour temperature;
- ``camera``: a pose on a spherical shell around a target, look-at jitter, roll, field of view;
- ``background``: a plain colour, a procedural pattern or an image from a folder;
- ``distractors``: shapes flying in the camera's view, in front of the objects;
- ``sensor``: sensor noise.

Every randomizer draws from its own named stream of the job seed (``streams.stream``):
adding a randomizer, or changing one's range, leaves every other draw unchanged. What each
drew is recorded in ``Scene.randomization`` (the job's description) and its main draws in
the label tables (``background_kind``, ``light_count``; per object ``texture_kind``,
``color``, ``hue``, ``roughness``, ``metallic``).
"""

"""What a generator's parameters mean for the task, declared beside its parameter model.

*Semantic* parameters change the task's answer (what is in the scene, how many, where);
*nuisance* parameters must not (light, camera, textures, noise). *Targets* are the label
columns a model learns, derived from the ``objects`` table. Dataset tests use these to check
coverage of both kinds and that no nuisance factor predicts a target.
"""

from __future__ import annotations

from dataclasses import dataclass

# Task targets every generator's labels provide, as SQL over ``objects`` joined to ``frames``:
# name -> expression giving a categorical value per object row.
TARGETS = {
    "category": "o.category",
    "visibility": "CASE WHEN o.occlusion < 0.1 THEN 'visible' WHEN o.occlusion < 0.5 "
    "THEN 'partly occluded' ELSE 'mostly occluded' END",
    "objects_per_frame": "CAST(least(f.n_objects, 10) AS VARCHAR)",
    "height_bin": "CAST(floor(least(greatest(o.z, 0), 0.3) / 0.05) AS VARCHAR)",
}


@dataclass(frozen=True)
class Domain:
    semantic: tuple[str, ...]
    nuisance: tuple[str, ...]
    targets: tuple[str, ...] = ("category", "visibility", "objects_per_frame")
    # nuisance factors drawn per job by the domain randomizers and recorded as ``jobs``
    # columns (``background_kind``, ``light_count``): tested like varied nuisance parameters
    drawn: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(TARGETS)
        if unknown:
            raise ValueError(f"unknown targets {sorted(unknown)}; known: {sorted(TARGETS)}")

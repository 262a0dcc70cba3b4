"""Physics: PyBullet simulates a scene description into per-frame poses, velocities and
collision events (a ``Trajectory``) that every renderer then reads."""

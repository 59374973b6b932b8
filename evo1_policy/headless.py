"""Headless MuJoCo rendering, for both simulators (the MuJoCo arm and Meta-World): EGL unless the
user chose otherwise (osmesa also needs PYOPENGL_PLATFORM=osmesa). MuJoCo reads the choice when
it is first imported, so call this before importing mujoco, gymnasium's MuJoCo envs or metaworld."""

from __future__ import annotations

import os


def use_headless_gl() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

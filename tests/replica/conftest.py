"""Headless rendering for every replica test, whichever module imports mujoco first."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

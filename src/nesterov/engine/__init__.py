"""The engine every optimizer of nesterov runs on: flat arenas, backends, low-precision state."""

from nesterov.engine.arena import Arena, fits_arena
from nesterov.engine.backends import BACKENDS, fused_step

__all__ = ["Arena", "BACKENDS", "fits_arena", "fused_step"]

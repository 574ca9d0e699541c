"""The screen-space splat filter both renderers draw: the viewer's on the GPU
(``explorer.renderer``, ``[splats]`` settings) and the backend's (``backend.geometry.splat``).

One source for the constants, so a frame the backend renders and the cloud the viewer draws
blend points the same way. Numpy-free and imported by both sides, like the camera conventions.
"""

SIGMA_SCALE = 0.55
"""Gaussian sigma of a point's footprint, in units of its screen radius (pixels)."""
MIN_SIGMA_PX = 0.5
"""Smallest Gaussian sigma in pixels: the low-pass that keeps every splat at least a pixel."""
DEPTH_TOLERANCE = 0.04
"""Footprints at most this much (relative to depth) behind a pixel's front surface blend."""

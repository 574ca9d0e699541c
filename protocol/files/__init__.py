"""File formats both sides read or write, with numpy and msgspec only (no torch).

- ``manifest``: a saved session's ``manifest.json`` (typed, finite numbers, plain names), read
  by the backend's sessions and by ``dreamjourney sessions`` / ``explore --resume``;
- ``clouds``: coloured point PLYs (``points``) and standard 3D Gaussian splat PLYs
  (``splats``, flattened onto the local surface where ``surfaces`` knows it), streamed a
  chunk at a time into a ``.part`` file renamed when complete (``ply_stream``). The backend's
  ``dreamjourney export`` and the explorer's F8 write their worlds with the same writers.
"""

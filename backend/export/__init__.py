"""Take the world out: a session's cloud, cameras and clips as files other programs open.

``dreamjourney export SESSION --as splats|points|path|video [--out FILE]`` (``cli``):

- ``splats`` (``protocol.files.splats``): the standard 3D Gaussian splat PLY of the reference
  3DGS code (x y z, nx ny nz, f_dc_0..2, f_rest_*, opacity, scale_0..2, rot_0..3), each point
  a Gaussian sized by its footprint at the view that made it and, where the local surface is
  known (``protocol.files.surfaces``), flattened onto it;
- ``points`` (``protocol.files.points``): a coloured point PLY (x y z red green blue);
- ``path`` (``protocol.camera_path``): every camera of the session's clips as a nerfstudio
  camera-path JSON;
- ``video`` (``video``): the session's clips joined into one MP4.

Clouds are streamed a chunk at a time from the session's PLY into a ``.part`` file renamed
when complete (``protocol.files.ply_stream``), with progress, so a world of any size exports in bounded
memory. The session folder is read in one place only (``session_source``). The writers live in
``protocol.files``: the explorer writes its own world with them, without importing backend.
"""

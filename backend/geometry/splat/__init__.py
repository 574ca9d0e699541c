"""Anti-aliased point splatting: a batch of poses -> images, visibility masks and depth.

``SplatRenderer(device, SplatConfig()).render(cloud_or_store, poses, K, width, height)``
returns a ``RenderOutput``. The renderers, one module each behind one ``render`` signature
(``base.Render``), as gsplat keeps its reference and fast paths:

- ``base``: SplatConfig, RenderOutput, DeviceCloud, projections (what every renderer shares);
- ``filtered``: the anti-aliased splatting in torch tensors (the reference; the CUDA path);
- ``numba_loops``: the same steps as compiled CPU loops (numba), several times faster;
- ``zbuffer``: the nearest-point z-buffer with opaque discs (``antialias=False``);
- ``pytorch3d_raster``: pytorch3d's rasterizer, where pytorch3d is installed;
- ``renderer``: ``SplatRenderer``, which validates, keeps the upload cached and picks one.
"""

from backend.geometry.splat.base import DeviceCloud, NumpyRenderOutput, RenderOutput, SplatConfig
from backend.geometry.splat.renderer import SplatRenderer

__all__ = ["DeviceCloud", "NumpyRenderOutput", "RenderOutput", "SplatConfig", "SplatRenderer"]

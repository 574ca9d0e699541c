"""World geometry: pure math on numpy arrays and torch tensors, no model code.

Conventions (DESIGN.md): OpenCV cameras (x right, y down, z forward), poses camera-to-world
4x4, world = the first view's camera frame, K in pixels, images H x W x 3 uint8 RGB, depth =
z-depth float32.

The pieces and how they fit (the classic engine's transition):

    cloud = unproject(image, depth, K, pose)                 # PointCloud (xyz, rgb, radius)
    store = PointStore(); delta = store.append(cloud)         # delta = points added
    for chunk in store.chunks(delta, 65536): ...              # -> protocol PointsDelta
    out = SplatRenderer("cpu").render(store, poses, K, W, H)  # RenderOutput(image, mask, depth)
    end = out.numpy(); holes = ~end.mask[-1]                  # inpaint those pixels, then
    new_depth = align_depth(model_depth, end.depth[-1], end.mask[-1]).apply(model_depth)
    store.append(unproject(filled, new_depth, K, poses[-1], mask=holes))

Modules: ``cloud`` (PointCloud), ``unproject``, ``depth`` (align_depth, horizon_depth,
clean_depth_edges), ``popup`` (the no-model depth prior: sky, ground, standing regions),
``layout`` (a scene's ground plane and sky; views labelled for fills), ``regions`` (the region
a stroke lies in), ``depth_metrics``, ``synthetic`` (scenes with exact depth for tests and
benchmarks), ``layers`` (split_layers), ``store`` (PointStore), ``ply`` (read/write),
``splat`` (SplatRenderer, SplatConfig, RenderOutput: one module per renderer),
``metrics`` (consistency). Trajectories live in ``protocol.trajectory`` (numpy only) because
the explorer uses them too.
"""

from backend.geometry.cloud import PointCloud
from backend.geometry.depth import (
    DepthAlignment,
    align_depth,
    clean_depth_edges,
    estimate_horizon,
    horizon_depth,
)
from backend.geometry.layers import DepthLayer, LayeredDepth, split_layers
from backend.geometry.metrics import ConsistencyResult, consistency
from backend.geometry.ply import read_ply, write_ply
from backend.geometry.splat import RenderOutput, SplatConfig, SplatRenderer
from backend.geometry.store import PointStore
from backend.geometry.unproject import unproject

__all__ = [
    "ConsistencyResult",
    "DepthAlignment",
    "DepthLayer",
    "LayeredDepth",
    "PointCloud",
    "PointStore",
    "RenderOutput",
    "SplatConfig",
    "SplatRenderer",
    "align_depth",
    "clean_depth_edges",
    "consistency",
    "estimate_horizon",
    "horizon_depth",
    "read_ply",
    "split_layers",
    "unproject",
    "write_ply",
]

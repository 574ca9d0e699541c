"""An independent reader and renderer of 3D Gaussian splat PLY files, for the export tests.

Nothing of the program's own is used: the file is read with ``plyfile`` the way the
reference 3DGS code's ``GaussianModel.load_ply`` reads it (properties by name, ``f_rest_*``
and ``scale_*``/``rot*`` sorted by their index; exp of the scales, sigmoid of the opacity,
the quaternion normalised), the Gaussians are turned into covariances, projected with the
EWA Jacobian plus the 0.3 px^2 low-pass, and coloured from their spherical harmonics by
gsplat's pure-PyTorch reference implementation (``gsplat.cuda._torch_impl``: runs on the
CPU). gsplat's reference compositing needs CUDA (its tile lists come from a CUDA kernel and
its blending from nerfacc), so the front-to-back blend is written out here with the rules of
its CUDA rasteriser: per pixel, in order of depth, ``alpha = min(0.999, o exp(-q))`` with
``q`` the conic's quadratic form at the pixel centre, skipped below 1/255, stopping before
the transmittance falls to 1e-4.
"""

from __future__ import annotations

import numpy as np
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from plyfile import PlyData


def read_gaussians(path) -> dict[str, torch.Tensor]:
    """The Gaussians of a splat PLY as the reference loader activates them."""
    v = PlyData.read(str(path))["vertex"]
    names = [p.name for p in v.properties]

    def by_index(prefix: str) -> list[str]:
        return sorted((n for n in names if n.startswith(prefix)), key=lambda n: int(n.split("_")[-1]))

    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    dc = np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], 1)[:, None, :]
    rest_names = by_index("f_rest_")
    degree = int(round(np.sqrt((len(rest_names) + 3) / 3))) - 1
    assert len(rest_names) == 3 * (degree + 1) ** 2 - 3, len(rest_names)
    rest = np.stack([v[n] for n in rest_names], 1) if rest_names else np.zeros((len(xyz), 0))
    # the reference stores f_rest channel-major: [N, 3, coeffs] -> [N, coeffs, 3]
    rest = rest.reshape(len(xyz), 3, -1).transpose(0, 2, 1)
    scales = np.stack([v[n] for n in by_index("scale_")], 1)
    rots = np.stack([v[n] for n in by_index("rot")], 1)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {
        "means": t(xyz),
        "sh": torch.cat([t(dc), t(rest)], 1),
        "degree": degree,
        "opacities": torch.sigmoid(t(v["opacity"])),
        "scales": torch.exp(t(scales)),
        "quats": torch.nn.functional.normalize(t(rots), dim=-1),
    }


def render(g: dict[str, torch.Tensor], pose: np.ndarray, K: np.ndarray, width: int, height: int,
           max_radius: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image on black, H x W float32 accumulated alpha) at the OpenCV
    camera-to-world ``pose``."""
    viewmat = torch.from_numpy(np.linalg.inv(pose).astype(np.float32))[None]
    Ks = torch.from_numpy(np.asarray(K, np.float32))[None]
    covars, _ = _quat_scale_to_covar_preci(g["quats"], g["scales"], True, False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        g["means"], covars, viewmat, Ks, width, height, eps2d=0.3)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    cam_centre = torch.from_numpy(pose[:3, 3].astype(np.float32))
    dirs = g["means"] - cam_centre
    colors = torch.clamp_min(_spherical_harmonics(g["degree"], dirs, g["sh"]) + 0.5, 0.0)
    visible = (radii > 0).all(-1)
    assert int(radii[visible].max()) <= max_radius, "a Gaussian larger than the reference loop covers"
    idx = torch.nonzero(visible).squeeze(1)
    # every (Gaussian, pixel) pair within the Gaussian's 3.33-sigma box, by box size
    pix, gid, alpha = [], [], []
    reach = torch.maximum(radii[idx, 0], radii[idx, 1])
    for R in torch.unique(reach).tolist():
        sel = idx[reach == R]
        mx, my = means2d[sel, 0], means2d[sel, 1]
        rx, ry = radii[sel, 0], radii[sel, 1]
        a, b, c = conics[sel].unbind(-1)
        opac = g["opacities"][sel]
        cx, cy = torch.floor(mx).long(), torch.floor(my).long()
        for dy in range(-R, R + 1):
            for dx in range(-R, R + 1):
                px, py = cx + dx, cy + dy
                ddx, ddy = px + 0.5 - mx, py + 0.5 - my
                q = 0.5 * (a * ddx * ddx + c * ddy * ddy) + b * ddx * ddy
                al = torch.clamp_max(opac * torch.exp(-q), 0.999)
                ok = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (ddx.abs() <= rx) \
                    & (ddy.abs() <= ry) & (q >= 0) & (al >= 1.0 / 255.0)
                pix.append((py * width + px)[ok])
                gid.append(sel[ok])
                alpha.append(al[ok])
    pix, gid, alpha = torch.cat(pix), torch.cat(gid), torch.cat(alpha).double()
    # front to back per pixel: sort by (pixel, depth)
    depth_bits = depths[gid].contiguous().view(torch.int32).long()  # positive floats order as ints
    order = torch.argsort((pix.long() << 32) | depth_bits)
    pix, gid, alpha = pix[order], gid[order], alpha[order]
    log_t = torch.log1p(-alpha)
    csum = torch.cumsum(log_t, 0)
    first = torch.ones(len(pix), dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(pix)), 0), 0).values
    before = csum - log_t - (csum[start] - log_t[start])  # exclusive sum within the pixel
    T = torch.exp(before)
    used = T * (1.0 - alpha) > 1e-4
    w = torch.where(used, alpha * T, 0.0)
    out = torch.zeros(width * height, 3, dtype=torch.float64)
    out.index_add_(0, pix, w[:, None] * colors[gid].double())
    acc = torch.zeros(width * height, dtype=torch.float64).index_add_(0, pix, w)
    image = (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(height, width, 3).numpy()
    return image, acc.reshape(height, width).float().numpy()

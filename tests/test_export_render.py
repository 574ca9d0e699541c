"""The exported splats rendered by an independent 3D Gaussian splat rasteriser on the CPU
(``tests/splat_reference.py``: the file read as the reference 3DGS loader reads it, gsplat's
PyTorch reference projection and spherical harmonics, the CUDA rasteriser's blending rules)
at the photo's pose, against the program's own render of the same cloud: at least 30 dB
PSNR on the shared scenes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.engines.base import OpenRequest
from backend.engines.classic import ClassicEngine
from backend.geometry.splat import SplatRenderer
from protocol.files.clouds import write_splats
from protocol.messages import SceneText

pytestmark = pytest.mark.slow
splat_reference = pytest.importorskip("splat_reference", reason="needs gsplat (the dev extra)")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.mark.parametrize("name", ["03_ancient", "09_countryside", "58_woodland"])
def test_splats_render_in_an_independent_rasteriser_as_in_ours(scenes_dir, tmp_path, name):
    image = np.asarray(Image.open(scenes_dir / f"{name}.jpg").convert("RGB"))
    engine = ClassicEngine(depth_model="none")  # the horizon prior: no download
    scene, cloud = engine.open_scene(OpenRequest(name, image, text=SceneText()))
    h, w = image.shape[:2]
    ours = SplatRenderer("cpu").render(cloud, np.eye(4)[None], scene.K, w, h).numpy().image[0]
    out = write_splats([(cloud.xyz, cloud.rgb, cloud.radius)], len(cloud), tmp_path / "s.ply")
    gaussians = splat_reference.read_gaussians(out)
    theirs, alpha = splat_reference.render(gaussians, np.eye(4), scene.K, w, h)
    score = psnr(theirs, ours)
    print(f"{name}: independent render vs ours {score:.2f} dB, vs the photo {psnr(theirs, image):.2f} dB")
    assert np.median(alpha) > 0.99  # the splats cover the view as the points do
    assert score >= 30.0

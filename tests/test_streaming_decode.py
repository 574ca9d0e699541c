"""Frames leave the decoder piece by piece: LTX decodes in the VAE's own temporal tiles, and the
pieces are exactly what the VAE's framewise decode returns, so the first frames can be shown
after one tile instead of after the whole clip."""

from __future__ import annotations

import numpy as np
import torch

from backend.engines.diffusion_sampling import stream_frames
from backend.engines.diffusion_video import Letterbox, time_indices
from backend.guidance import GuidanceConfig, GuidedVideoSampler
from backend.guidance.sampler import GuidedSampleOutput, SamplerCounters, SamplerTimings
from backend.models import LTXAdapter, testing


def tiny_ltx() -> LTXAdapter:
    adapter = LTXAdapter(testing.ltx_pipeline())
    vae = adapter.vae
    # Tiles of 2 + 1 latent frames, one latent frame apart, blended over 4 frames.
    vae.tile_sample_min_num_frames, vae.tile_sample_stride_num_frames = 8, 4
    return adapter


def latents(adapter: LTXAdapter, latent_frames: int = 6, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, latent_frames, adapter.latent_channels, size, size, generator=g)


def test_pieces_are_the_vaes_framewise_decode():
    adapter = tiny_ltx()
    z = latents(adapter)
    with torch.no_grad():
        pieces = list(adapter.iter_decode(z))
        adapter.vae.use_framewise_decoding = True
        whole = adapter.decode_latents(z)
    starts = [start for start, _ in pieces]
    assert len(pieces) > 2 and starts == sorted(starts) and starts[0] == 0
    streamed = torch.cat([frames for _, frames in pieces])
    assert streamed.shape == whole.shape == (21, 3, 32, 32)
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)
    # ... and framewise decoding blends tiles: it is not the same as decoding them apart.
    adapter.vae.use_framewise_decoding = False
    with torch.no_grad():  # latent 2's last frame then the frames of latents 3 to 5
        apart = torch.cat([adapter.decode_latents(z[:, :3]), adapter.decode_latents(z[:, 2:])[1:]])
    assert (apart - whole).abs().max() > 1e-3


def test_first_frames_go_out_after_one_tile():
    adapter = tiny_ltx()
    calls = []
    adapter.vae.decoder.register_forward_hook(lambda *_: calls.append(1))
    config = GuidanceConfig(num_frames=13, pad_frames=4, height=32, width=32, mode="none")
    z = latents(adapter)  # 21 frames = 13 + 2 x 4 padded views
    out = GuidedSampleOutput(None, SamplerCounters(), SamplerTimings(), z)
    box = Letterbox.fit(32, 32, 32, 32)
    sampler = GuidedVideoSampler(adapter)
    stream = stream_frames(sampler, out, config, None, box, 7)
    with torch.no_grad():
        first_index, first = next(stream)
        calls_at_first = len(calls)
        rest = list(stream)
    total_tiles = len(calls)
    assert first_index == 0 and calls_at_first == 1 < total_tiles
    assert [i for i, _ in rest] == list(range(1, 7))
    # The frames are the clip's, padding dropped, at evenly spaced times.
    with torch.no_grad():
        adapter.vae.use_framewise_decoding = True
        whole = adapter.decode_latents(z)[4:17]
    expected = ((whole.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    frames = np.stack([first] + [f for _, f in rest])
    np.testing.assert_array_equal(frames, expected.numpy()[time_indices(7, 13)])

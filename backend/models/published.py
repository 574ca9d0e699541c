"""Published architectures of every video family, for cost and GPU benchmarks (no weights).

Numbers from each release's ``transformer/config.json`` (``unet`` for SVD), ``vae`` and
``scheduler`` configs, with the native clip each runs at in this project (the transition's
frames plus 4 padded views at each end). ``text_shape`` / ``image_shape``: the outputs of the
text encoder (and Wan I2V's CLIP), which the benchmarks replace with random tensors.
"""

from __future__ import annotations

from typing import Any

COGVIDEOX_5B_I2V: dict[str, Any] = {
    "source": "THUDM/CogVideoX-5b-I2V",
    "denoiser": dict(
        num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16,
        flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, text_embed_dim=4096,
        num_layers=42, dropout=0.0, attention_bias=True, sample_width=90, sample_height=60,
        sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
        activation_fn="gelu-approximate", timestep_activation_fn="silu",
        norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ),
    "vae": dict(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(128, 256, 256, 512),
        latent_channels=16, layers_per_block=3, act_fn="silu", norm_eps=1e-6,
        norm_num_groups=32, temporal_compression_ratio=4, sample_height=480, sample_width=720,
        scaling_factor=0.7,
    ),
    "scheduler": dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
        set_alpha_to_one=True, snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing",
    ),
    "text_shape": (226, 4096),
    "frames": 49, "height": 480, "width": 720, "spatial": 8, "temporal": 4, "channels": 16,
}

WAN21_I2V_14B_480P: dict[str, Any] = {
    "source": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    "denoiser": dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
        added_kv_proj_dim=5120, rope_max_seq_len=1024,
    ),
    "vae": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0),
    "scheduler": dict(num_train_timesteps=1000, shift=3.0),
    "text_shape": (512, 4096),
    "image_shape": (257, 1280),
    "frames": 81, "height": 480, "width": 832, "spatial": 8, "temporal": 4, "channels": 16,
}

WAN21_VACE_1_3B: dict[str, Any] = {
    "source": "Wan-AI/Wan2.1-VACE-1.3B-diffusers",
    "denoiser": dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        vace_layers=list(range(0, 30, 2)), vace_in_channels=96,
    ),
    "vae": WAN21_I2V_14B_480P["vae"],
    "scheduler": dict(num_train_timesteps=1000, shift=3.0),
    "text_shape": (512, 4096),
    "frames": 81, "height": 480, "width": 832, "spatial": 8, "temporal": 4, "channels": 16,
}

LTX_VIDEO_13B_DISTILLED: dict[str, Any] = {
    "source": "Lightricks/LTX-Video-0.9.7-distilled",
    "denoiser": dict(
        in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
        attention_head_dim=128, cross_attention_dim=4096, num_layers=48,
        qk_norm="rms_norm_across_heads", caption_channels=4096,
    ),
    # The 0.9.0 VAE (diffusers' defaults: 128 channels, 32x spatial, 8x temporal).
    "vae": dict(),
    "scheduler": dict(),
    "timesteps": (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 3.0),
    "text_shape": (128, 4096),
    "frames": 49, "height": 512, "width": 768, "spatial": 32, "temporal": 8, "channels": 128,
}

SVD_XT: dict[str, Any] = {
    "source": "stabilityai/stable-video-diffusion-img2vid-xt",
    "denoiser": dict(),  # UNetSpatioTemporalConditionModel's defaults are SVD's
    "scheduler": dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        interpolation_type="linear", num_train_timesteps=1000, prediction_type="v_prediction",
        sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
        timestep_type="continuous", use_karras_sigmas=True,
    ),
    "image_shape": (1, 1024),
    "frames": 25, "height": 576, "width": 1024, "spatial": 8, "temporal": 1, "channels": 4,
}

PUBLISHED: dict[str, dict[str, Any]] = {
    "cogvideox": COGVIDEOX_5B_I2V,
    "wan": WAN21_I2V_14B_480P,
    "svd": SVD_XT,
    "ltx": LTX_VIDEO_13B_DISTILLED,
    "wan-vace": WAN21_VACE_1_3B,
}

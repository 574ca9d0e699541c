"""Published architectures of the video models, for cost, memory and GPU benchmarks (no weights).

Each entry is written from the release's own configs (named in ``sources``): the denoiser's
``transformer/config.json`` (``unet`` for SVD), the VAE's and the scheduler's, the text
encoder's (for its weights and output shape), and the clip each runs at in this project (the
transition's frames plus 4 padded views at each end, at the preset's size). Keys a release's
config carries that the diffusers class does not declare are left out. The text encoders and
Wan's CLIP are not run by the cost and GPU benchmarks: ``text_shape`` / ``image_shape`` are
their outputs, replaced by random tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

T5_V1_1_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                   num_heads=64, relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
                   is_encoder_decoder=False)
"""google/t5-v1_1-xxl config.json: the encoder LTX-Video and CogVideoX ship (T5EncoderModel)."""
UMT5_XXL = dict(T5_V1_1_XXL, vocab_size=256384)
"""google/umt5-xxl config.json: Wan 2.1's text encoder (UMT5EncoderModel)."""
QWEN2_VL_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                   num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                   max_position_embeddings=32768, rope_scaling={"type": "mrope",
                                                                "mrope_section": [16, 24, 24]},
                   vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16,
                                      mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                                      temporal_patch_size=2, in_chans=3))
"""Qwen/Qwen2-VL-7B-Instruct config.json: EasyAnimate V5.1's text encoder."""


@dataclass(frozen=True)
class PublishedModel:
    """One released video model: its configs and the clip this project runs it at."""

    name: str
    family: str
    source: str
    """Where ``dreamjourney models fetch`` gets it (hub repo, or a single file's URL)."""
    denoiser: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    frames: int
    height: int
    width: int
    spatial: int
    temporal: int
    channels: int
    sources: tuple[str, ...]
    text_encoder: tuple[str, dict[str, Any]] | None = None
    """(transformers class, config) of the text encoder, None for none (SVD)."""
    text_shape: tuple[int, int] | None = None
    image_shape: tuple[int, int] | None = None
    timesteps: tuple[float, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Adapter options the release documents (decode timestep, ...)."""

    def text_tokens(self) -> tuple[int, int]:
        """``text_shape``: (tokens, width) of the text embeddings the denoiser takes."""
        if self.text_shape is None:
            raise ValueError(f"{self.family} takes no text embeddings")
        return self.text_shape

    def image_tokens(self) -> tuple[int, int]:
        """``image_shape``: (tokens, width) of the image embeddings the denoiser takes."""
        if self.image_shape is None:
            raise ValueError(f"{self.family} takes no image embeddings")
        return self.image_shape

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        return ((self.frames - 1) // self.temporal + 1, self.height // self.spatial,
                self.width // self.spatial)


COGVIDEOX_5B_I2V = PublishedModel(
    name="cogvideox-5b-i2v", family="cogvideox", source="THUDM/CogVideoX-5b-I2V",
    denoiser=dict(
        num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16,
        flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, text_embed_dim=4096,
        num_layers=42, dropout=0.0, attention_bias=True, sample_width=90, sample_height=60,
        sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
        activation_fn="gelu-approximate", timestep_activation_fn="silu",
        norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    ),
    vae=dict(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(128, 256, 256, 512),
        latent_channels=16, layers_per_block=3, act_fn="silu", norm_eps=1e-6,
        norm_num_groups=32, temporal_compression_ratio=4, sample_height=480, sample_width=720,
        scaling_factor=0.7,
    ),
    scheduler=dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
        set_alpha_to_one=True, snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing",
    ),
    text_encoder=("T5EncoderModel", T5_V1_1_XXL), text_shape=(226, 4096),
    frames=49, height=480, width=720, spatial=8, temporal=4, channels=16,
    sources=("THUDM/CogVideoX-5b-I2V transformer, vae, scheduler config.json",),
)

WAN21_I2V_14B_480P = PublishedModel(
    name="wan2.1-i2v-14b-480p", family="wan", source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    denoiser=dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
        added_kv_proj_dim=5120, rope_max_seq_len=1024,
    ),
    vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0),
    scheduler=dict(num_train_timesteps=1000, shift=3.0),
    text_encoder=("UMT5EncoderModel", UMT5_XXL), text_shape=(512, 4096), image_shape=(257, 1280),
    frames=81, height=480, width=832, spatial=8, temporal=4, channels=16,
    sources=("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer, vae config.json",),
)

WAN21_VACE_1_3B = PublishedModel(
    name="wan2.1-vace-1.3b", family="wan-vace", source="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
    denoiser=dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        vace_layers=list(range(0, 30, 2)), vace_in_channels=96,
    ),
    vae=WAN21_I2V_14B_480P.vae, scheduler=dict(num_train_timesteps=1000, shift=3.0),
    text_encoder=("UMT5EncoderModel", UMT5_XXL), text_shape=(512, 4096),
    frames=81, height=480, width=832, spatial=8, temporal=4, channels=16,
    sources=("Wan-AI/Wan2.1-VACE-1.3B-diffusers transformer config.json",),
)

LTX_095_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(128, 256, 512, 1024, 2048),
    down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5),
    spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
    patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True,
    decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
)
"""The VAE of LTX-Video 0.9.5, 0.9.7 and 0.9.8 (diffusers' scripts/convert_ltx_to_diffusers.py
``get_vae_config('0.9.7')``; the same as a converted 0.9.8 VAE's vae/config.json on the hub)."""
LTX_DISTILLED_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)
"""diffusers' LTX-Video docs, 0.9.7 / 0.9.8 distilled: the base pass's custom timesteps."""
LTX_DISTILLED_OPTIONS = {"decode_timestep": 0.05, "decode_noise_scale": 0.025}
"""diffusers' LTX-Video docs for the distilled checkpoints (with image_cond_noise_scale = 0,
which is what the adapter does)."""

LTX_2B_098_DISTILLED = PublishedModel(
    name="ltx-video-0.9.8-2b-distilled", family="ltx",
    source="https://huggingface.co/Lightricks/LTX-Video/blob/main/ltxv-2b-0.9.8-distilled.safetensors",
    denoiser=dict(
        in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
        attention_head_dim=64, cross_attention_dim=2048, num_layers=28,
        activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads",
        norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096, attention_bias=True,
        attention_out_bias=True,
    ),
    vae=LTX_095_VAE, scheduler=dict(use_dynamic_shifting=False),
    text_encoder=("T5EncoderModel", T5_V1_1_XXL), text_shape=(128, 4096),
    timesteps=LTX_DISTILLED_TIMESTEPS, options=LTX_DISTILLED_OPTIONS,
    frames=49, height=480, width=704, spatial=32, temporal=8, channels=128,
    sources=("Lightricks/LTX-Video transformer/config.json (the 2B transformer)",
             "diffusers scripts/convert_ltx_to_diffusers.py (0.9.5+ VAE, unshifted scheduler)",
             "diffusers docs api/pipelines/ltx_video.md (distilled timesteps, decode settings)"),
)

LTX_13B_097_DISTILLED = PublishedModel(
    name="ltx-video-0.9.7-13b-distilled", family="ltx", source="Lightricks/LTX-Video-0.9.7-distilled",
    denoiser=dict(LTX_2B_098_DISTILLED.denoiser, attention_head_dim=128, cross_attention_dim=4096,
                  num_layers=48),
    vae=LTX_095_VAE, scheduler=dict(use_dynamic_shifting=False),
    text_encoder=("T5EncoderModel", T5_V1_1_XXL), text_shape=(128, 4096),
    timesteps=LTX_DISTILLED_TIMESTEPS, options=LTX_DISTILLED_OPTIONS,
    frames=49, height=480, width=704, spatial=32, temporal=8, channels=128,
    sources=("Lightricks/LTX-Video-0.9.7-dev transformer/config.json (48 layers, 4096 wide)",),
)

EASYANIMATE_V51_12B_INP = PublishedModel(
    name="easyanimate-v5.1-12b-inp", family="easyanimate",
    source="alibaba-pai/EasyAnimateV5.1-12b-zh-InP-diffusers",
    denoiser=dict(
        num_attention_heads=48, attention_head_dim=64, in_channels=33, out_channels=16,
        patch_size=2, sample_width=90, sample_height=60, activation_fn="gelu-approximate",
        timestep_activation_fn="silu", freq_shift=0, num_layers=48, mmdit_layers=48,
        dropout=0.0, time_embed_dim=512, add_norm_text_encoder=True, text_embed_dim=3584,
        text_embed_dim_t5=None, norm_eps=1e-5, norm_elementwise_affine=True,
        flip_sin_to_cos=True, time_position_encoding_type="3d_rope", after_norm=False,
        resize_inpaint_mask_directly=True, enable_text_attention_mask=True,
        add_noise_in_inpaint_model=True,
    ),
    # AutoencoderKLMagvit's defaults: the released MagVIT VAE's layout (latent 16, 8x / 4x,
    # scaling 0.7125); its hub config.json could not be read here.
    vae=dict(),
    scheduler=dict(),
    text_encoder=("Qwen2VLForConditionalGeneration", QWEN2_VL_7B), text_shape=(256, 3584),
    frames=57, height=512, width=512, spatial=8, temporal=4, channels=16,
    sources=("alibaba-pai/EasyAnimateV5.1-12b-zh-InP transformer/config.json",),
)

SVD_XT = PublishedModel(
    name="svd-xt", family="svd", source="stabilityai/stable-video-diffusion-img2vid-xt",
    denoiser=dict(),  # UNetSpatioTemporalConditionModel's defaults are SVD's
    vae=dict(), scheduler=dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        interpolation_type="linear", num_train_timesteps=1000, prediction_type="v_prediction",
        sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
        timestep_type="continuous", use_karras_sigmas=True,
    ),
    image_shape=(1, 1024),
    frames=25, height=576, width=1024, spatial=8, temporal=1, channels=4,
    sources=("stabilityai/stable-video-diffusion-img2vid-xt unet, scheduler config.json",),
)

PUBLISHED: dict[str, PublishedModel] = {m.name: m for m in (
    COGVIDEOX_5B_I2V, WAN21_I2V_14B_480P, WAN21_VACE_1_3B, SVD_XT, LTX_13B_097_DISTILLED,
    LTX_2B_098_DISTILLED, EASYANIMATE_V51_12B_INP)}


def published_for(source: str) -> PublishedModel:
    """The published model a models TOML's ``source`` names."""
    for model in PUBLISHED.values():
        if model.source == source:
            return model
    raise KeyError(f"no published architecture for {source!r}; known: "
                   f"{', '.join(m.source for m in PUBLISHED.values())}")


DEPTH_ANYTHING_V2: dict[str, dict[str, Any]] = {
    "depth-anything/Depth-Anything-V2-Small-hf": dict(
        backbone=dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
        neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64),
    "depth-anything/Depth-Anything-V2-Large-hf": dict(
        backbone=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
        neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256),
}
"""Depth Anything V2 config.json (DINOv2 backbone, patch 14, inputs resized to 518)."""

SD2_INPAINTING: dict[str, dict[str, Any]] = {
    "unet": dict(sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                 cross_attention_dim=1024, use_linear_projection=True,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "text_encoder": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                         num_attention_heads=16, max_position_embeddings=77, vocab_size=49408,
                         hidden_act="gelu", projection_dim=512),
    "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4),
}
"""stabilityai/stable-diffusion-2-inpainting unet, text_encoder, vae config.json."""

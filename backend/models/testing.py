"""Tiny random-initialised components for tests and CPU benchmarks (no weights, no network).

Each builder makes the real diffusers / transformers classes from small configs, seeded, so
the real pipeline and sampler code runs in well under a second per step on a CPU. The text
tokenizer is a word-level ``tokenizers`` model built in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from backend.models.adapters.base import DiffusersModel

_WORDS = ("a", "camera", "flyover", "cruising", "steadily", "across", "the", "scene", "water",
          "flows", "flag", "waves", "river", "bridge", "mountain", "city", "sky", "tree",
          "cloud", "bird", "car", "boat", "smoke", "moves", "sways")


def tiny_tokenizer(model_max_length: int = 16):
    """A word-level fast tokenizer (pad 0, eos 1, unk 2) that saves and loads like any other."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def tiny_t5(d_model: int = 32, vocab_size: int = 64):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=1,
                      num_heads=4, relative_attention_num_buckets=8)
    return T5EncoderModel(config)


def tiny_clip_vision(hidden: int = 4, image_size: int = 32, patch_size: int = 4):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=hidden, projection_dim=hidden, num_hidden_layers=2,
                              num_attention_heads=2, image_size=image_size, intermediate_size=16,
                              patch_size=patch_size)
    processor = CLIPImageProcessor(crop_size=image_size, size=image_size)
    return CLIPVisionModelWithProjection(config), processor


def cogvideox_components(size: str = "tiny", sample_size: int = 4, sample_frames: int = 9,
                         learned_positions: bool = False) -> dict:
    """CogVideoX-I2V parts. ``tiny``: ~30k transformer parameters; ``small``: ~4M.

    ``sample_size`` is the latent side (x8 pixels); with ``learned_positions`` the transformer
    only runs at that size and ``sample_frames`` frames, like the released 5B-I2V.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    heads, head_dim, layers = (2, 16, 1) if size == "tiny" else (4, 64, 5)
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=8, out_channels=4,
        time_embed_dim=16, text_embed_dim=32, num_layers=layers, sample_width=sample_size,
        sample_height=sample_size, sample_frames=sample_frames, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=learned_positions,
    )
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
        latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing",
                                       rescale_betas_zero_snr=True, snr_shift_scale=1.0,
                                       beta_schedule="scaled_linear", clip_sample=False)
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler,
            "text_encoder": tiny_t5(), "tokenizer": tiny_tokenizer()}


def cogvideox_pipeline(**kwargs):
    from diffusers import CogVideoXImageToVideoPipeline

    return CogVideoXImageToVideoPipeline(**cogvideox_components(**kwargs))


def wan_components(flf2v: bool = False) -> dict:
    """Wan 2.1 I2V parts with the release's UniPC flow scheduler config; ``flf2v``: the
    first-last-frame transformer (a learned position embedding over two CLIP images)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=4,
        pos_embed_seq_len=2 * 65 if flf2v else None,  # two images of (32 / 4)^2 + 1 tokens
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0, num_train_timesteps=1000)
    image_encoder, image_processor = tiny_clip_vision()
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler,
            "text_encoder": tiny_t5(), "tokenizer": tiny_tokenizer(),
            "image_encoder": image_encoder, "image_processor": image_processor}


def wan_pipeline(flf2v: bool = False):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(**wan_components(flf2v))


def ltx_components() -> dict:
    """LTX-Video parts (the diffusers LTXConditionPipeline test recipe: 4x spatial and 4x
    temporal compression instead of the released 32x / 8x)."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32,
    )
    torch.manual_seed(0)
    vae: DiffusersModel = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": tiny_t5(), "tokenizer": tiny_tokenizer()}


def ltx_pipeline():
    from diffusers import LTXConditionPipeline

    return LTXConditionPipeline(**ltx_components())


def wan_vace_components() -> dict:
    """Wan-VACE parts (the diffusers WanVACEPipeline test recipe), UniPC flow scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        vace_layers=[0, 2], vace_in_channels=96,
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0, num_train_timesteps=1000)
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler,
            "text_encoder": tiny_t5(), "tokenizer": tiny_tokenizer()}


def wan_vace_pipeline():
    from diffusers import WanVACEPipeline

    return WanVACEPipeline(**wan_vace_components())


def easyanimate_components() -> dict:
    """EasyAnimate InP parts (the diffusers test recipe with a 9-channel InP transformer:
    latents, the resized mask and the masked video's latents). No text encoder: the Qwen2-VL
    one cannot be built offline, so tests pass prompt embeddings (16 wide)."""
    from diffusers import AutoencoderKLMagvit, EasyAnimateTransformer3DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    transformer = EasyAnimateTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=9, out_channels=4,
        time_embed_dim=2, text_embed_dim=16, num_layers=1, sample_width=16, sample_height=16,
        patch_size=2,
    )
    torch.manual_seed(0)
    vae: DiffusersModel = AutoencoderKLMagvit(
        in_channels=3, out_channels=3,
        down_block_types=("SpatialDownBlock3D",) + ("SpatialTemporalDownBlock3D",) * 3,
        up_block_types=("SpatialUpBlock3D",) + ("SpatialTemporalUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
        norm_num_groups=2, spatial_group_norm=False,
    )
    # The released configs carry this key (the first frame has its own latent frame), which
    # the diffusers class does not declare but the pipeline reads.
    vae.register_to_config(cache_mag_vae=True)
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": None, "tokenizer": None}


def easyanimate_pipeline():
    from diffusers import EasyAnimateInpaintPipeline

    return EasyAnimateInpaintPipeline(**easyanimate_components())


def svd_components() -> dict:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=8,
        out_channels=4, down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=16, num_attention_heads=2, projection_class_embeddings_input_dim=48,
        addition_time_embed_dim=16,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                                       down_block_types=["DownEncoderBlock2D"] * 2, latent_channels=4)
    # SVD resizes the image to 224 x 224 before CLIP, whatever the video size.
    image_encoder, feature_extractor = tiny_clip_vision(hidden=16, image_size=224, patch_size=32)
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "image_encoder": image_encoder,
            "feature_extractor": feature_extractor}


def svd_pipeline():
    from diffusers import StableVideoDiffusionPipeline

    return StableVideoDiffusionPipeline(**svd_components())


def inpaint_pipeline():
    """A Stable Diffusion inpainting pipeline (9-channel UNet), no safety checker."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=9,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8, attention_head_dim=4,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                        norm_num_groups=8)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=2, pad_token_id=0, vocab_size=64,
        max_position_embeddings=16,
    ))
    return StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet,
        scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def depth_model():
    """A tiny Depth Anything (DINOv2 backbone) model and its image processor."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4,
                            num_attention_heads=2, intermediate_size=32,
                            out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False, apply_layernorm=True)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16,
                                 patch_size=8, neck_hidden_sizes=[8, 8, 16, 16],
                                 fusion_hidden_size=16, head_hidden_size=8)
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                                  ensure_multiple_of=8, do_pad=False)
    return DepthAnythingForDepthEstimation(config), processor

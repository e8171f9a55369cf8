"""Tiny, randomly initialised diffusers image-to-video pipelines, built from configs with nothing downloaded.

They stand in for real generators (SVD-XT, Wan2.1-I2V) in tests and CPU demos: the same classes, the same call
signature and output layouts, a few thousand parameters, a 32x32 video in well under a second on a CPU. Their
videos are noise-like (the weights are random); what they are for is the plumbing (sampling, decoding, LoRA,
reward backpropagation, `save_pretrained` / `from_pretrained`). The sizes follow diffusers' own pipeline tests.

```python
from icreward.generation.tiny import tiny_svd_pipeline, tiny_wan_i2v_pipeline
pipe = tiny_svd_pipeline(seed=0)
frames = pipe(image, height=32, width=32, num_frames=2, num_inference_steps=2, output_type="pt").frames  # (B,F,3,H,W)
pipe = tiny_wan_i2v_pipeline(seed=0)
frames = pipe(image, prompt="a cat", height=32, width=32, num_frames=5, num_inference_steps=2,
              output_type="pt").frames  # (B,F,3,H,W) in [0, 1]
```
"""

from __future__ import annotations

import torch

# Defaults for calling the tiny pipelines (what the tests and `SMALL_CALL` use): any size divisible by 16 works.
TINY_SIZE = 32
# Wan's causal VAE compresses time by 4: a video has 4k + 1 frames.
TINY_WAN_FRAMES = 5
TINY_SVD_FRAMES = 2


def tiny_svd_pipeline(seed: int = 0, *, num_frames: int = TINY_SVD_FRAMES):
    """A `StableVideoDiffusionPipeline` with random weights (seeded by `seed`): a spatio-temporal U-Net with
    blocks (32, 64), a temporal-decoder VAE with 4 latent channels, a 5-layer CLIP vision tower of width 32 (224
    pixels in patches of 16: SVD resizes PIL images to 224), and SVD's own scheduler (Euler, v-prediction, Karras
    sigmas). Image only, no prompt; `num_frames` is the U-Net's
    default video length (any length works at call time). Calls take `height=width=32`, 2 steps."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SIZE,
        in_channels=8,  # noisy latents (4) + the image's latents (4), concatenated
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,  # 3 added time ids (fps, motion bucket, noise aug) x 32
        addition_time_embed_dim=32,
        num_frames=num_frames,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=5,
            num_attention_heads=4,
            image_size=224,  # SVD resizes PIL images to 224 for CLIP itself (tensors go in as they are)
            intermediate_size=37,
            patch_size=16,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipe = StableVideoDiffusionPipeline(
        vae=vae.eval(),
        image_encoder=image_encoder.eval(),
        unet=unet.eval(),
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_tokenizer():
    """A byte-level tokenizer built in memory (256 byte tokens + `<pad>`, `</s>`, `<unk>`; no merges), standing in
    for T5's sentencepiece tokenizer: it encodes any text, needs no download, and saves with `save_pretrained`
    (a `PreTrainedTokenizerFast`, which `DiffusionPipeline.from_pretrained` loads back)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2: T5's own order
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def tiny_wan_i2v_pipeline(seed: int = 0):
    """A `WanImageToVideoPipeline` (Wan2.1-I2V's architecture) with random weights (seeded by `seed`): a 2-layer
    DiT with patch (1, 2, 2) and 2 heads of 12, in 36 / out 16 channels; Wan's causal 3-D VAE with z_dim 16; a
    tiny CLIP vision tower for the image embedding; a tiny UMT5 encoder (Wan's T5 variant; d_model 32, d_ff 37,
    d_kv 8, 4 heads, 5 layers, vocabulary 1103) with a byte-level tokenizer built in memory (`tiny_tokenizer`), so
    prompts work as strings; flow-matching Euler scheduler. Calls take `height=width=32`, `num_frames=4k+1` (e.g.
    5), 2 steps."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(seed + 1)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=1103, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=5, relative_attention_num_buckets=8
        )
    )
    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,  # noisy latents (16) + the image condition (4 mask + 16 latents)
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
    )
    torch.manual_seed(seed + 3)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=TINY_SIZE,
            intermediate_size=16,
            patch_size=1,
        )
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=CLIPImageProcessor(crop_size=TINY_SIZE, size=TINY_SIZE),
        image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe

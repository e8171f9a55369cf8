"""Pipeline families: how to sample from a diffusers I2V pipeline's parts with gradients.

Every pipeline's `__call__` runs under `torch.no_grad()`, so reward backpropagation rebuilds the sampling loop from
the pipeline's own parts. A family adapter says, for one pipeline class, how to

- `condition`: encode the conditioning images (and prompts) once, without gradients;
- `initial_latents`: draw the starting noise (seeded), scaled as the pipeline's `prepare_latents` does;
- `predict`: run the denoiser on the latents at a timestep (classifier-free guidance where asked) -> the model output
  the pipeline's scheduler's `step` takes;
- `decode`: VAE-decode the final latents into frames `[B, T', 3, H, W]` in [-1, 1], optionally a subset of frames.

The denoiser is passed in (not read from the pipeline) so that the LoRA-wrapped or accelerate-prepared module is the
one called. Families: `svd` (`StableVideoDiffusionPipeline`: U-Net, Euler with v-prediction, latents `[B, F, C, h, w]`)
and `wan-i2v` (`WanImageToVideoPipeline`: DiT, flow matching, latents `[B, C, F, h, w]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from icreward.errors import IcrewardError


@dataclass
class Conditioning:
    """What `condition` computed for a batch: tensors the denoiser reads at every step, plus the sizes."""

    tensors: dict[str, torch.Tensor]
    batch: int
    height: int
    width: int
    num_frames: int
    extra: dict[str, Any] = field(default_factory=dict)


class PipelineFamily:
    """Base class of the adapters; `pipe` is the diffusers pipeline whose parts are used."""

    name = ""
    denoiser_attr = ""  # the pipeline attribute holding the denoiser ("unet" / "transformer")
    latent_layout = ""  # "BTCHW" or "BCTHW"

    def __init__(self, pipe, guidance_scale: float = 1.0):
        self.pipe = pipe
        self.guidance_scale = guidance_scale

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_attr)

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def condition(self, images: torch.Tensor, prompts: list[str | None], num_frames: int, generator) -> Conditioning:
        raise NotImplementedError

    def initial_latents(self, cond: Conditioning, scheduler, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, denoiser, latents: torch.Tensor, t, scheduler, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, cond: Conditioning, frames: list[int] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decodable_frames(self, num_frames: int, wanted: int | None) -> list[int] | None:
        """The frame indices `decode` can return alone (None: all frames): `wanted` frames spread uniformly over
        frames 1 .. T-1 (frame 0 is pinned to the image and carries no signal) plus frame 0 for the reward's anchor."""
        if wanted is None or wanted >= num_frames:
            return None
        wanted = max(wanted, 2)
        rest = torch.linspace(1, num_frames - 1, wanted - 1).round().long().unique().tolist()
        return [0, *rest]


def _generator_device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


class SVDFamily(PipelineFamily):
    """`StableVideoDiffusionPipeline` (SVD / SVD-XT): CLIP image embedding + VAE latents of the image as conditioning,
    EDM-style Euler sampling with v-prediction; the VAE's temporal decoder decodes any subset of frames."""

    name = "svd"
    denoiser_attr = "unet"
    latent_layout = "BTCHW"

    def __init__(
        self,
        pipe,
        guidance_scale: float = 1.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        min_guidance_scale: float = 1.0,
    ):
        super().__init__(pipe, guidance_scale)
        self.fps = fps
        self.motion_bucket_id = motion_bucket_id
        self.noise_aug_strength = noise_aug_strength
        self.min_guidance_scale = min_guidance_scale

    def clip_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """`images [B, 3, H, W]` in [0, 1] -> CLIP image embeddings `[B, 1, D]`, resized to the image processor's crop
        size as the pipeline does for PIL images (for tensors it skips the resize)."""
        pipe = self.pipe
        crop = pipe.feature_extractor.crop_size
        size = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,  # the pipeline's own resize (Gaussian blur, then bicubic), for equal embeddings
        )

        resized = _resize_with_antialiasing(images * 2 - 1, size)
        pixels = pipe.feature_extractor(
            images=(resized + 1) / 2,
            do_normalize=True,
            do_center_crop=False,
            do_resize=False,
            do_rescale=False,
            return_tensors="pt",
        ).pixel_values
        dtype = next(pipe.image_encoder.parameters()).dtype
        return pipe.image_encoder(pixels.to(images.device, dtype)).image_embeds.unsqueeze(1)  # (B, 1, D)

    def image_latents(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The noise-augmented image's VAE latents `[B, C, h, w]` (unscaled, as the pipeline conditions on them)."""
        noise = torch.randn(images.shape, generator=generator, device=_generator_device(generator, images.device))
        augmented = images * 2 - 1 + self.noise_aug_strength * noise.to(images.device, images.dtype)
        vae = self.pipe.vae
        return vae.encode(augmented.to(vae.dtype)).latent_dist.mode()

    def time_ids(self, batch: int, device, dtype) -> torch.Tensor:
        ids = torch.tensor([[self.fps - 1, self.motion_bucket_id, self.noise_aug_strength]], dtype=dtype, device=device)
        return ids.repeat(batch, 1)  # (B, 3)

    @torch.no_grad()
    def condition(self, images, prompts, num_frames, generator) -> Conditioning:
        b, _, h, w = images.shape
        embeds = self.clip_embeddings(images)
        image_latents = self.image_latents(images, generator).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)  # (B,F,C,h,w)
        time_ids = self.time_ids(b, images.device, embeds.dtype)
        if self.cfg:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
            time_ids = torch.cat([time_ids, time_ids])
        tensors = {"embeds": embeds, "image_latents": image_latents.to(embeds.dtype), "time_ids": time_ids}
        return Conditioning(tensors, b, h, w, num_frames)

    def initial_latents(self, cond, scheduler, generator) -> torch.Tensor:
        pipe = self.pipe
        shape = (
            cond.batch,
            cond.num_frames,
            pipe.unet.config.in_channels // 2,
            cond.height // pipe.vae_scale_factor,
            cond.width // pipe.vae_scale_factor,
        )  # (B, F, C, h, w)
        device = cond.tensors["embeds"].device
        noise = torch.randn(shape, generator=generator, device=_generator_device(generator, device))
        return noise.to(device) * scheduler.init_noise_sigma

    def predict(self, denoiser, latents, t, scheduler, cond) -> torch.Tensor:
        model_in = torch.cat([latents] * 2) if self.cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        model_in = torch.cat([model_in, cond.tensors["image_latents"]], dim=2)  # (B, F, 2C, h, w)
        out = denoiser(
            model_in,
            t,
            encoder_hidden_states=cond.tensors["embeds"],
            added_time_ids=cond.tensors["time_ids"],
            return_dict=False,
        )[0]
        if self.cfg:  # the pipeline's frame-wise scale, from min_guidance_scale at frame 0 to guidance_scale
            uncond, conditioned = out.chunk(2)
            scale = torch.linspace(self.min_guidance_scale, self.guidance_scale, cond.num_frames, device=out.device)
            out = uncond + scale.view(1, -1, 1, 1, 1).to(out.dtype) * (conditioned - uncond)
        return out

    def decode(self, latents, cond, frames=None) -> torch.Tensor:
        vae = self.pipe.vae
        chosen = latents if frames is None else latents[:, frames]  # (B, T', C, h, w)
        b, t = chosen.shape[:2]
        flat = chosen.flatten(0, 1) / vae.config.scaling_factor
        decoded = vae.decode(flat.to(vae.dtype), num_frames=t).sample  # (B*T', 3, H, W)
        return decoded.reshape(b, t, *decoded.shape[1:]).float()  # (B, T', 3, H, W) in about [-1, 1]


class WanI2VFamily(PipelineFamily):
    """`WanImageToVideoPipeline` (Wan2.1-I2V; Wan2.2 with one transformer): prompt embeddings from the pipeline's T5,
    CLIP image tokens where the transformer takes them, the masked first-frame latent condition concatenated on
    channels; flow-matching sampling; the causal video VAE decodes all latent frames (a frame subset is taken after
    decoding)."""

    name = "wan-i2v"
    denoiser_attr = "transformer"
    latent_layout = "BCTHW"

    def __init__(self, pipe, guidance_scale: float = 1.0, negative_prompt: str = ""):
        super().__init__(pipe, guidance_scale)
        self.negative_prompt = negative_prompt
        if getattr(pipe, "transformer_2", None) is not None or pipe.config.expand_timesteps:
            raise IcrewardError(
                "wan-i2v: two-transformer (Wan2.2 A14B) and expand_timesteps pipelines are not "
                "supported; use Wan2.1-I2V or a single-transformer Wan2.2 pipeline"
            )

    def num_latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.pipe.vae_scale_factor_temporal + 1

    def check_frames(self, num_frames: int) -> None:
        if (num_frames - 1) % self.pipe.vae_scale_factor_temporal:
            raise IcrewardError(
                f"wan-i2v: --frames must be 1 + a multiple of {self.pipe.vae_scale_factor_temporal}, got {num_frames}"
            )

    @torch.no_grad()
    def condition(self, images, prompts, num_frames, generator) -> Conditioning:
        self.check_frames(num_frames)
        pipe = self.pipe
        b, _, h, w = images.shape
        device = images.device
        dtype = pipe.transformer.dtype
        texts = [p or "" for p in prompts]
        embeds, negative = pipe.encode_prompt(
            texts,
            negative_prompt=[self.negative_prompt] * b,
            do_classifier_free_guidance=self.cfg,
            device=device,
            max_sequence_length=512,
        )  # the pipeline's __call__ default
        tensors = {"prompt": embeds.to(dtype)}
        if self.cfg:
            tensors["negative"] = negative.to(dtype)
        if pipe.transformer.config.image_dim is not None:
            pixels = pipe.image_processor(images=list(images.clamp(0, 1)), do_rescale=False, return_tensors="pt")
            out = pipe.image_encoder(
                pixels.pixel_values.to(device, pipe.image_encoder.dtype), output_hidden_states=True
            )
            tensors["image"] = out.hidden_states[-2].to(dtype)  # (B, N, D)
        # The first frame's latents with zeros after it, and the mask of which latent frames are given.
        vae = pipe.vae
        video = torch.cat([images.unsqueeze(2) * 2 - 1, images.new_zeros(b, 3, num_frames - 1, h, w)], 2)  # (B,3,F,H,W)
        latent = vae.encode(video.to(vae.dtype)).latent_dist.mode().float()  # (B, z, f, h', w')
        mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
        latent = (latent - mean) / std
        lh, lw = latent.shape[-2:]
        mask = torch.zeros(b, 1, num_frames, lh, lw, device=device)
        mask[:, :, 0] = 1
        mask = torch.cat([mask[:, :, :1].repeat_interleave(pipe.vae_scale_factor_temporal, 2), mask[:, :, 1:]], 2)
        mask = mask.view(b, -1, pipe.vae_scale_factor_temporal, lh, lw).transpose(1, 2)  # (B, s_t, f, h', w')
        tensors["condition"] = torch.cat([mask, latent], 1).to(dtype)  # (B, s_t + z, f, h', w')
        return Conditioning(tensors, b, h, w, num_frames, {"latent_hw": (lh, lw)})

    def initial_latents(self, cond, scheduler, generator) -> torch.Tensor:
        lh, lw = cond.extra["latent_hw"]
        shape = (cond.batch, self.pipe.vae.config.z_dim, self.num_latent_frames(cond.num_frames), lh, lw)
        device = cond.tensors["prompt"].device
        return torch.randn(shape, generator=generator, device=_generator_device(generator, device)).to(device)

    def predict(self, denoiser, latents, t, scheduler, cond) -> torch.Tensor:
        dtype = cond.tensors["prompt"].dtype
        model_in = torch.cat([latents, cond.tensors["condition"].to(latents.dtype)], 1).to(dtype)  # (B, C', f, h, w)
        timestep = t.expand(latents.shape[0])
        kwargs = {"encoder_hidden_states_image": cond.tensors.get("image"), "return_dict": False}
        out = denoiser(
            hidden_states=model_in, timestep=timestep, encoder_hidden_states=cond.tensors["prompt"], **kwargs
        )[0]
        if self.cfg:
            uncond = denoiser(
                hidden_states=model_in, timestep=timestep, encoder_hidden_states=cond.tensors["negative"], **kwargs
            )[0]
            out = uncond + self.guidance_scale * (out - uncond)
        return out.float()

    def decode(self, latents, cond, frames=None) -> torch.Tensor:
        vae = self.pipe.vae
        mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        video = vae.decode((latents * std + mean).to(vae.dtype), return_dict=False)[0]  # (B, 3, F, H, W)
        video = video.transpose(1, 2).float()  # (B, F, 3, H, W)
        return video if frames is None else video[:, frames]


FAMILIES = {"svd": SVDFamily, "wan-i2v": WanI2VFamily}
_CLASS_FAMILY = {"StableVideoDiffusionPipeline": "svd", "WanImageToVideoPipeline": "wan-i2v"}


def family_for(pipe, guidance_scale: float = 1.0) -> PipelineFamily:
    """The adapter of `pipe`'s class; `IcrewardError` naming the supported classes for any other."""
    name = _CLASS_FAMILY.get(type(pipe).__name__)
    if name is None:
        raise IcrewardError(
            f"--pipeline: {type(pipe).__name__} is not supported for fine-tuning; supported: "
            f"{', '.join(sorted(_CLASS_FAMILY))}"
        )
    return FAMILIES[name](pipe, guidance_scale=guidance_scale)

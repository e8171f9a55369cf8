"""Fused bfloat16 CPU inference for the ViT-family encoders of `hf:` backbones (ViT, DINOv2).

On a CPU with bf16 matrix units a ViT-B/16 GEMM runs near the machine's square-matmul rate, and what transformers
does around the GEMMs decides the speed: q, k and v as three GEMMs, the bias copied into each output before the
GEMM, exact GELU, layer scale and the residual adds as separate passes over memory, attention on strided heads,
and the whole batch at once, so a layer's activations (68 images: 13,396 tokens x 3,072 x 2 bytes = 82 MB for the
MLP) fall out of the cache between passes. `FusedViT` runs the same layers with:

- q, k and v as one GEMM (their weights concatenated);
- oneDNN-packed weights, the bias and exact GELU, or the bias and the residual add, fused into the GEMM
  (`torch.ops.mkldnn._linear_pointwise`, the kernels inductor's CPU freezing pass uses);
- DINOv2's layer scale folded into the weights of the projection it scales;
- attention by `scaled_dot_product_attention` reading q, k and v in place from the one GEMM's output;
- the batch in chunks of about `CHUNK_TOKENS` tokens, so each layer's activations stay in the cache.

The embeddings and the final norm are the model's own modules. Tokens agree with transformers' bf16 forward to
bf16 rounding (one rounding fewer after each fused epilogue). `HFBackbone` uses it only where it computes the same
function: on the CPU, with gradients off, computing in bf16 (bf16 weights, or fp32 weights under bf16 autocast),
for plain `nn.Linear` / `nn.LayerNorm` layers with exact GELU and no hooks; float32 runs stay transformers' own,
bit for bit. Weights are packed once and packed again when a parameter changes (`Tensor._version`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Tokens per chunk of the batch: 17 images of a ViT-B/16 at 224 (197 tokens). Measured on AVX-512/AMX: a
# (3,349 x 768) x (768 x 3,072) bf16 GEMM runs at 2.3-2.8 TFLOP/s, at 13,396 rows 1.3-1.5 (the output leaves cache).
CHUNK_TOKENS = 4096
FUSED_MODEL_TYPES = frozenset({"vit", "dinov2", "dinov2_with_registers"})


def fused_kernels_available() -> bool:
    """Whether this torch build has oneDNN's bf16 linear with fused epilogues (x86 CPUs with AVX-512 or AMX)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


def unsupported_reason(model: nn.Module, config) -> str | None:
    """Why `FusedViT` cannot run `model` (a transformers ViT / DINOv2), or None when it can."""
    if config.model_type not in FUSED_MODEL_TYPES:
        return f"model type {config.model_type} (fused: {', '.join(sorted(FUSED_MODEL_TYPES))})"
    if getattr(config, "hidden_act", None) != "gelu" or getattr(config, "use_swiglu_ffn", False):
        return f"activation {getattr(config, 'hidden_act', None)} (fused: exact GELU)"
    if not fused_kernels_available():
        return "this CPU or torch build has no oneDNN bf16 linear"
    for layer in _layers(model):
        try:
            parts = _layer_parts(layer)
        except AttributeError as e:
            return f"unexpected layer structure ({e})"
        if any(type(parts[k]) is not nn.Linear for k in ("q", "k", "v", "o", "fc1", "fc2")):
            return "a projection is not a plain nn.Linear (adapters, quantisation)"
        if any(type(parts[k]) is not nn.LayerNorm for k in ("norm1", "norm2")):
            return "a norm is not a plain nn.LayerNorm"
        if parts["q"].out_features != config.hidden_size or config.hidden_size % config.num_attention_heads:
            return "heads do not split the width evenly (a custom head_dim)"
    return None


def has_hooks(model: nn.Module) -> bool:
    """Whether forward hooks would see the model's submodules run (its own or global ones): the fused layers skip
    them."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class FusedViT:
    """The encoder layers of `model` as packed bf16 GEMMs with fused epilogues; call it on pixel values.

    `model` is a transformers `ViTModel` / `Dinov2Model` that `unsupported_reason` accepts. The packed weights are
    copies: build it again (`stale` says when) after the model's parameters change.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = CHUNK_TOKENS):
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.heads = model.config.num_attention_heads
        self.version = parameter_version(model)
        # The inputs, the residual stream and the norms keep the weights' dtype: bf16 for bf16 weights (as transformers
        # runs them), float32 for float32 weights under bf16 autocast (as autocast runs them); the GEMMs are bf16.
        self.residual_dtype = model.embeddings.patch_embeddings.projection.weight.dtype
        self.layers = [_pack_layer(_layer_parts(layer), chunk_tokens, self.residual_dtype) for layer in _layers(model)]

    def stale(self) -> bool:
        return parameter_version(self.model) != self.version

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values [B, 3, H, W]` -> the model's `last_hidden_state [B, 1 + R + N, D]` (after its final norm).

        The embeddings and the final norm run as the model's modules under the caller's autocast state; the layers
        with autocast off, their GEMMs in bf16.
        """
        hidden = self.model.embeddings(pixel_values.to(self.residual_dtype))  # (B, S, D)
        per_image = hidden.shape[1]
        chunk = max(1, self.chunk_tokens // per_image)
        with torch.autocast(hidden.device.type, enabled=False):
            hidden = torch.cat([self._layers(part) for part in hidden.split(chunk)])
        return self.model.layernorm(hidden)

    def _layers(self, hidden: torch.Tensor) -> torch.Tensor:
        B, S, D = hidden.shape
        h = hidden.reshape(B * S, D).to(self.residual_dtype)  # (B*S, D): the residual stream
        linear = torch.ops.mkldnn._linear_pointwise
        bf16_stream = self.residual_dtype == torch.bfloat16
        for p in self.layers:
            x = F.layer_norm(h, (D,), *p["norm1"]).to(torch.bfloat16)
            qkv = linear(x, *p["qkv"], "none", [], "")  # (B*S, 3D)
            q, k, v = qkv.view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, S, d) each
            attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * S, D)  # (B*S, D)
            if bf16_stream:
                h = linear.binary(attn, h, *p["o"], "add")  # h + attn @ Wo^T + bo, one rounding
            else:
                h = h + linear(attn, *p["o"], "none", [], "")
            x = F.layer_norm(h, (D,), *p["norm2"]).to(torch.bfloat16)
            x = linear(x, *p["fc1"], "gelu", [], "none")  # exact GELU(x @ W1^T + b1): (B*S, 4D)
            if bf16_stream:
                h = linear.binary(x, h, *p["fc2"], "add")
            else:
                h = h + linear(x, *p["fc2"], "none", [], "")
        return h.view(B, S, D)


def parameter_version(model: nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or written in place (an optimizer step, `load_state_dict`)."""
    return tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())


def _layers(model: nn.Module) -> nn.ModuleList:
    return model.layers if hasattr(model, "layers") else model.encoder.layer


def _layer_parts(layer: nn.Module) -> dict:
    """The modules of one layer, whatever transformers calls them in ViT and DINOv2."""
    attention = layer.attention
    is_dinov2 = hasattr(layer, "norm1")
    return {
        "norm1": layer.norm1 if is_dinov2 else layer.layernorm_before,
        "q": attention.q_proj,
        "k": attention.k_proj,
        "v": attention.v_proj,
        "o": attention.o_proj,
        "norm2": layer.norm2 if is_dinov2 else layer.layernorm_after,
        "fc1": layer.mlp.fc1,
        "fc2": layer.mlp.fc2,
        "scale1": layer.layer_scale1.lambda1 if is_dinov2 else None,
        "scale2": layer.layer_scale2.lambda1 if is_dinov2 else None,
    }


def _pack_layer(parts: dict, chunk_tokens: int, norm_dtype: torch.dtype) -> dict:
    """Copies of one layer's weights: bf16 GEMM weights packed by oneDNN with layer scale folded in, norms in
    `norm_dtype`."""

    def linear(weights: list[nn.Linear], scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.cat([m.weight.detach().float() for m in weights])  # (out, in)
        bias = torch.cat(
            [m.bias.detach().float() if m.bias is not None else weight.new_zeros(m.out_features) for m in weights]
        )
        if scale is not None:  # layer scale: (x W^T + b) * s = x (s W)^T + s b
            weight, bias = weight * scale.detach().float()[:, None], bias * scale.detach().float()
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16), chunk_tokens)
        return packed, bias.to(torch.bfloat16)

    def norm(m: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        bias = m.bias.detach().to(norm_dtype) if m.bias is not None else None
        return m.weight.detach().to(norm_dtype), bias, m.eps

    with torch.no_grad():
        return {
            "norm1": norm(parts["norm1"]),
            "qkv": linear([parts["q"], parts["k"], parts["v"]]),
            "o": linear([parts["o"]], parts["scale1"]),
            "norm2": norm(parts["norm2"]),
            "fc1": linear([parts["fc1"]]),
            "fc2": linear([parts["fc2"]], parts["scale2"]),
        }

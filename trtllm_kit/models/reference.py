"""The PyTorch reference implementation of a ModelSpec: every block may have its own shapes.

Module and parameter names follow transformers' ``LlamaForCausalLM``, so a Hugging Face state dict
loads as is. Its forward has exactly the exported ONNX graph's inputs and outputs, which makes it the
reference the exporter is validated against and the eager backend for width-pruned models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trtllm_kit.models.spec import LayerSpec, ModelSpec, rope_inv_freq
from trtllm_kit.models.weights import WeightSource, tensor_shapes

KV = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, layer: LayerSpec):
        super().__init__()
        H = spec.hidden_size
        self.layer = layer
        self.q_proj = nn.Linear(H, layer.q_dim, bias=layer.qkv_bias)
        self.k_proj = nn.Linear(H, layer.kv_dim, bias=layer.qkv_bias)
        self.v_proj = nn.Linear(H, layer.kv_dim, bias=layer.qkv_bias)
        self.o_proj = nn.Linear(layer.q_dim, H, bias=layer.o_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: KV, slots: torch.Tensor | None = None) -> tuple[torch.Tensor, KV]:
        B, S, _ = x.shape
        L = self.layer
        q = self.q_proj(x).view(B, S, L.n_heads, L.head_dim).transpose(1, 2)  # (B, nh, S, hd)
        k = self.k_proj(x).view(B, S, L.n_kv_heads, L.head_dim).transpose(1, 2)  # (B, nkv, S, hd)
        v = self.v_proj(x).view(B, S, L.n_kv_heads, L.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if slots is None:  # growing cache: present = past + new, the exported graph's contract
            k = torch.cat((past[0], k), dim=2)  # (B, nkv, T, hd)
            v = torch.cat((past[1], v), dim=2)
        else:  # static cache (gpt-fast's KVCache.update): write in place, attend over every slot
            past[0].index_copy_(2, slots, k)
            past[1].index_copy_(2, slots, v)
            k, v = past  # (B, nkv, max_seq, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=L.n_kv_heads != L.n_heads)
        out = out.transpose(1, 2).reshape(B, S, L.q_dim)  # (B, S, nh*hd)
        return self.o_proj(out), (k, v)


ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "relu": F.relu, "gelu": F.gelu,
               "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
               "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec, layer: LayerSpec):
        super().__init__()
        H = spec.hidden_size
        self.gate_proj = nn.Linear(H, layer.mlp_dim, bias=layer.gate_up_bias)
        self.up_proj = nn.Linear(H, layer.mlp_dim, bias=layer.gate_up_bias)
        self.down_proj = nn.Linear(layer.mlp_dim, H, bias=layer.down_bias)
        self.act = ACTIVATIONS[spec.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, layer: LayerSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = Attention(spec, layer)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = MLP(spec, layer)

    def forward(self, x, cos, sin, mask, past: KV, slots=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past, slots)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), present


class Body(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(spec, layer) for layer in spec.layers)
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)


class ReferenceModel(nn.Module):
    """A LLaMA-family decoder with per-block shapes and the exported graph's I/O contract."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.model = Body(spec)
        if not spec.tie_word_embeddings:
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        # Kept out of the buffers so that .to(float16) leaves them in float32, as transformers does.
        self.inv_freq = {hd: rope_inv_freq(spec, hd) for hd in {layer.head_dim for layer in spec.layers}}

    def empty_past(self, batch: int, device=None, dtype=None) -> list[KV]:
        """Zero-length KV cache tensors, one (key, value) pair per block: (B, nkv_i, 0, hd_i)."""
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        return [(torch.zeros(batch, L.n_kv_heads, 0, L.head_dim, device=device, dtype=dtype),) * 2
                for L in self.spec.layers]

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past: list[KV] | None = None, last_only: bool = False,
                slots: torch.Tensor | None = None) -> tuple[torch.Tensor, list[KV]]:
        """One step: prefill when ``past`` is empty, a decode step otherwise.

        Args:
            input_ids: (B, S) token ids.
            position_ids: (B, S) positions (left padding shifts them).
            attention_mask: (B, P+S), 1 for real tokens, 0 for padding; with ``slots``, (B, max_seq) over
                every cache slot, 0 for slots not written yet.
            past: per-block (key, value), each (B, nkv_i, P, hd_i); None means P = 0. With ``slots``, the
                static cache: (B, nkv_i, max_seq, hd_i) buffers, written in place.
            last_only: return logits of the last position only.
            slots: (S,) int64 cache slots the new tokens are written to (static cache); None: the growing
                cache of the exported graph.

        Returns:
            logits (B, S or 1, vocab) and the per-block present (key, value), each (B, nkv_i, P+S, hd_i)
            (with ``slots``: the static buffers themselves).
        """
        B, S = input_ids.shape
        x = self.model.embed_tokens(input_ids)  # (B, S, H)
        past = past if past is not None else self.empty_past(B, x.device, x.dtype)
        T = attention_mask.shape[1]
        q_pos = torch.arange(T - S, T, device=x.device) if slots is None else slots
        causal = torch.arange(T, device=x.device)[None, :] <= q_pos[:, None]  # (S, T)
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()  # (B, 1, S, T)
        # Additive finite mask: a fully padded query row gets a uniform softmax, never NaN.
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        mask.masked_fill_(~allowed, torch.finfo(x.dtype).min)
        rope = {}
        presents = []
        for block, L, kv in zip(self.model.layers, self.spec.layers, past):
            if L.head_dim not in rope:
                inv = self.inv_freq[L.head_dim]
                if inv.device != x.device:
                    inv = self.inv_freq[L.head_dim] = inv.to(x.device)
                freqs = position_ids[:, :, None].float() * inv[None, None, :]  # (B, S, hd/2)
                emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, S, hd)
                rope[L.head_dim] = (emb.cos().to(x.dtype), emb.sin().to(x.dtype))
            x, present = block(x, *rope[L.head_dim], mask, kv, slots)
            presents.append(present)
        if last_only:
            x = x[:, -1:]
        x = self.model.norm(x)
        head = self.model.embed_tokens.weight if self.spec.tie_word_embeddings else self.lm_head.weight
        return F.linear(x, head), presents


def reference_from_weights(spec: ModelSpec, weights: WeightSource, dtype: torch.dtype = torch.float32,
                           device: str | torch.device = "cpu") -> ReferenceModel:
    """Build the reference module and load every tensor of ``weights`` into it (strictly)."""
    with torch.device("meta"):
        model = ReferenceModel(spec)
    model = model.to_empty(device=device)
    model.inv_freq = {hd: rope_inv_freq(spec, hd) for hd in model.inv_freq}
    params = dict(model.named_parameters())
    missing = set(params) - set(tensor_shapes(spec))
    assert not missing, f"reference parameters without a tensor name: {missing}"
    with torch.no_grad():
        for name, t in weights.items():
            params[name].copy_(t.to(torch.float32))
    return model.to(dtype).eval()

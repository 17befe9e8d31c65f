"""Reading and writing Hugging Face LLaMA-family checkpoints; per-layer shapes come from the tensors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import torch

from trtllm_kit.errors import ShapeError, ToolkitError
from trtllm_kit.models.spec import LayerSpec, ModelSpec
from trtllm_kit.models.weights import CheckpointWeights, WeightSource, tensor_shapes
from trtllm_kit.utils.fs import atomic_dir, write_json

log = logging.getLogger(__name__)
LLAMA_TYPES = ("llama",)
SHARD_BYTES = 2 << 30


def read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not path.exists():
        raise ToolkitError(f"model path {path} does not exist", "give a preset name (see `trtllm-kit models`) "
                           "or a Hugging Face checkpoint directory")
    if not cfg_path.is_file():
        raise ToolkitError(f"{path} has no config.json", "a Hugging Face checkpoint directory is expected")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ToolkitError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ToolkitError(f"{cfg_path} is not a model config (a JSON object is expected)")
    model_type = cfg.get("model_type")
    if model_type not in LLAMA_TYPES:
        raise ToolkitError(f"{cfg_path}: model_type {model_type!r} is not a LLaMA-family model",
                           f"supported model_type: {', '.join(LLAMA_TYPES)}")
    try:
        LlamaConfigFields.model_validate(cfg)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ToolkitError(f"{cfg_path}: {key}: {err['msg']} (got {err.get('input')!r})") from None
    return cfg


PosInt = Annotated[int, Field(strict=True, gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


class RopeScaling(BaseModel):
    """HF ``rope_scaling``: the keys each supported type needs (others are refused by the spec)."""

    model_config = ConfigDict(extra="allow")
    rope_type: str | None = None
    type: str | None = None
    factor: PosFloat | None = None
    low_freq_factor: PosFloat | None = None
    high_freq_factor: PosFloat | None = None
    original_max_position_embeddings: PosInt | None = None

    @model_validator(mode="after")
    def _needs(self):
        kind = self.rope_type or self.type or "default"
        needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                                   "original_max_position_embeddings")}.get(kind, ())
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"rope type {kind!r} needs {', '.join(missing)}")
        return self


class LlamaConfigFields(BaseModel):
    """The config.json fields the toolkit reads, with their types (strict: "32" is not 32, "false" not False)."""

    model_config = ConfigDict(extra="allow")
    hidden_size: PosInt
    num_hidden_layers: PosInt
    num_attention_heads: PosInt
    num_key_value_heads: PosInt | None = None
    head_dim: PosInt | None = None
    intermediate_size: PosInt | None = None
    vocab_size: PosInt | None = None
    rope_theta: PosFloat = 10000.0
    rms_norm_eps: PosFloat = 1e-6
    max_position_embeddings: PosInt = 2048
    tie_word_embeddings: Annotated[bool, Field(strict=True)] = False
    attention_bias: Annotated[bool, Field(strict=True)] = False
    mlp_bias: Annotated[bool, Field(strict=True)] = False
    hidden_act: str = "silu"
    rope_scaling: RopeScaling | None = None


def spec_from_checkpoint(path: str | Path) -> tuple[ModelSpec, CheckpointWeights]:
    """Load a checkpoint's spec, reading every block's shapes from its tensors.

    Args:
        path: a directory with ``config.json`` and safetensors or ``pytorch_model*.bin`` weights.

    Returns:
        The validated spec and a lazy weight source.

    Raises:
        ShapeError: naming the layer and tensor when shapes contradict each other or are missing.
    """
    path = Path(path)
    cfg = read_config(path)
    weights = CheckpointWeights(path)
    hidden = cfg["hidden_size"]
    n_layers = cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]

    def shape(name: str) -> tuple[int, ...]:
        s = weights.shape(name)
        if s is None:
            raise ShapeError(f"{path}: tensor {name} is missing from the checkpoint")
        return s

    emb = shape("model.embed_tokens.weight")
    if emb[1] != hidden:
        raise ShapeError(f"{path}: model.embed_tokens.weight is {list(emb)}, hidden_size is {hidden}")
    layers = []
    for i in range(n_layers):
        p = f"model.layers.{i}."
        q, k, v = (shape(p + f"self_attn.{x}_proj.weight") for x in "qkv")
        o = shape(p + "self_attn.o_proj.weight")
        gate, up, down = (shape(p + f"mlp.{x}_proj.weight") for x in ("gate", "up", "down"))
        where = f"{path}: layer {i}"
        for nm, s in (("q_proj", q), ("k_proj", k), ("v_proj", v), ("gate_proj", gate), ("up_proj", up)):
            if len(s) != 2 or s[1] != hidden:
                raise ShapeError(f"{where}: {nm}.weight is {list(s)}, expected [*, {hidden}]")
        if q[0] % head_dim:
            raise ShapeError(f"{where}: self_attn.q_proj.weight has {q[0]} rows, not a multiple of head dim {head_dim}")
        if k != v:
            raise ShapeError(f"{where}: self_attn.k_proj.weight {list(k)} and v_proj.weight {list(v)} differ")
        if k[0] % head_dim:
            raise ShapeError(f"{where}: self_attn.k_proj.weight has {k[0]} rows, not a multiple of head dim {head_dim}")
        if o != (hidden, q[0]):
            raise ShapeError(f"{where}: self_attn.o_proj.weight is {list(o)}, expected [{hidden}, {q[0]}]")
        if gate != up or down != (hidden, gate[0]):
            raise ShapeError(f"{where}: mlp shapes disagree: gate {list(gate)}, up {list(up)}, down {list(down)}")
        has = lambda n: weights.shape(p + n) is not None  # noqa: E731
        layers.append(LayerSpec(
            n_heads=q[0] // head_dim, n_kv_heads=k[0] // head_dim, head_dim=head_dim, mlp_dim=gate[0],
            qkv_bias=has("self_attn.q_proj.bias"), o_bias=has("self_attn.o_proj.bias"),
            gate_up_bias=has("mlp.gate_proj.bias"), down_bias=has("mlp.down_proj.bias")))
    if weights.shape(f"model.layers.{n_layers}.self_attn.q_proj.weight") is not None:
        raise ShapeError(f"{path}: checkpoint has more blocks than num_hidden_layers={n_layers}")
    _check_biases(path, cfg, layers)
    _check_config_against_tensors(path, cfg, layers, emb[0])
    tied = cfg.get("tie_word_embeddings", False)
    if not tied and weights.shape("lm_head.weight") is None:
        log.warning("%s: config.json says tie_word_embeddings is false but there is no lm_head.weight; "
                    "tying the output head to the embeddings", path)
        tied = True
    spec = ModelSpec(
        name=path.absolute().name, vocab_size=emb[0], hidden_size=hidden, layers=tuple(layers),
        rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
        rope_scaling=_rope_scaling(cfg), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=tied, max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        source_layers=cfg.get("trtllm_kit_source_layers"), hidden_act=str(cfg.get("hidden_act", "silu")),
    ).check()
    weights.spec = spec
    for name, s in tensor_shapes(spec).items():
        if shape(name) != s:
            raise ShapeError(f"{path}: tensor {name} is {list(shape(name))}, expected {list(s)}")
    return spec, weights


def _check_config_against_tensors(path: Path, cfg: dict, layers: list[LayerSpec], vocab: int) -> None:
    """Where transformers would build the model from config.json (uniform blocks), its sizes must be the
    tensors': else eager and validation would load weights into a model of another shape."""
    checks = [("vocab_size", vocab, "model.embed_tokens.weight rows")]
    if len(set(layers)) == 1 and "trtllm_kit_layers" not in cfg:
        la = layers[0]
        checks += [("intermediate_size", la.mlp_dim, "mlp.gate_proj.weight rows"),
                   ("num_attention_heads", la.n_heads, "q_proj rows / head_dim"),
                   ("num_key_value_heads", la.n_kv_heads, "k_proj rows / head_dim")]
    for key, have, what in checks:
        if cfg.get(key) is not None and cfg[key] != have:
            raise ShapeError(f"{path}: config.json says {key} {cfg[key]} but the tensors say {have} ({what})")


def _check_biases(path: Path, cfg: dict, layers: list[LayerSpec]) -> None:
    """Bias flags in config.json must agree with the tensors (transformers would invent missing biases)."""
    for key, what, has in (("attention_bias", "self_attn.q_proj.bias", lambda la: la.qkv_bias),
                           ("mlp_bias", "mlp.gate_proj.bias", lambda la: la.gate_up_bias)):
        if cfg.get(key) and not all(has(la) for la in layers):
            raise ShapeError(f"{path}: config.json sets {key} but the checkpoint has no {what} tensors")


def _rope_scaling(cfg: dict) -> dict | None:
    rs = cfg.get("rope_scaling")
    if rs is None and isinstance(cfg.get("rope_parameters"), dict):  # transformers >= 5 layout
        rp = {k: v for k, v in cfg["rope_parameters"].items() if k != "rope_theta"}
        rs = rp if rp.get("rope_type", "default") != "default" else None
    return rs


def hf_config(spec: ModelSpec, dtype: str = "float16") -> dict:
    """A transformers ``LlamaConfig`` dict for ``spec`` (global head counts from the first block)."""
    first = spec.layers[0]
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size,
        "intermediate_size": first.mlp_dim, "num_hidden_layers": spec.num_layers,
        "num_attention_heads": first.n_heads, "num_key_value_heads": first.n_kv_heads, "head_dim": first.head_dim,
        "rms_norm_eps": spec.rms_norm_eps, "rope_theta": spec.rope_theta, "rope_scaling": spec.rope_scaling,
        "max_position_embeddings": spec.max_position_embeddings, "tie_word_embeddings": spec.tie_word_embeddings,
        "attention_bias": first.qkv_bias, "mlp_bias": first.gate_up_bias, "hidden_act": spec.hidden_act,
        "torch_dtype": dtype, "bos_token_id": 1, "eos_token_id": 2,
    }
    if not spec.is_uniform:
        cfg["trtllm_kit_layers"] = [dict(vars(layer)) for layer in spec.layers]
    if spec.source_layers is not None:
        cfg["trtllm_kit_source_layers"] = list(spec.source_layers)
    return cfg


def save_checkpoint(spec: ModelSpec, weights: WeightSource, out: str | Path, dtype: torch.dtype = torch.float16,
                    force: bool = False, progress=None) -> Path:
    """Write ``spec``/``weights`` as a sharded safetensors Hugging Face checkpoint, atomically.

    Tensors are streamed into shards of at most 2 GiB, so memory holds one shard at a time.
    """
    from safetensors.torch import save_file

    out = Path(out)
    names = list(tensor_shapes(spec))
    with atomic_dir(out, force=force, kind="checkpoint") as tmp:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        weight_map: dict[str, str] = {}
        flushed = []

        def flush():
            idx = len(flushed) + 1
            fname = f"model-{idx:05d}.safetensors"
            save_file(shards[-1], str(tmp / fname), metadata={"format": "pt"})
            flushed.append(fname)
            for n in shards[-1]:
                weight_map[n] = fname
            shards[-1] = {}

        for name in names:
            t = weights.get(name).to(dtype).contiguous()
            if size and size + t.numel() * t.element_size() > SHARD_BYTES:
                flush()
                size = 0
            shards[-1][name] = t
            size += t.numel() * t.element_size()
            if progress:
                progress(name)
        flush()
        if len(flushed) == 1:
            (tmp / flushed[0]).rename(tmp / "model.safetensors")
        else:
            write_json(tmp / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
        write_json(tmp / "config.json", hf_config(spec, str(dtype).removeprefix("torch.")))
    return out

"""KV-cache layouts: one class per way an engine holds its cache, registered by name.

A layout owns everything that differs between them, on both sides:

- build: which engine inputs exist and their profile shapes, how the ONNX is parsed, how the parsed
  network is rewired, and the ``engine.json`` entry;
- run: the cache buffers, and what each step feeds and binds.

``portable``: the exported graph as is; ``past_key_values.*`` grow by Concat and ``present.*`` is a
fresh copy of the whole cache every step (runs everywhere, re-plans every step).
``portable-static``: the same TensorRT layers (any version, no KV plugin), with the cache a fixed-capacity
buffer the runner owns: ``present.*`` is only this step's keys/values, which the runner writes at the next
free position, so every decode step of a generation has the same shapes (planned once, CUDA-graph decode).
``inplace``: static caches [B, kv_heads_i, max_seq, head_dim_i] updated in place by TensorRT's native
KV-cache layers (TensorRT >= 10.15, TensorRT-RTX).
``plugin``: the same static caches, with each layer's cache update and attention done by the
toolkit's ``TrtllmKitKVCacheAttention`` plugin (TensorRT 8.6 to 10.x; compiled with nvcc).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from trtllm_kit.engine.limits import EngineLimits, ProfileSpec, sweep_profiles
from trtllm_kit.engine.manifest import PLUGIN_REWRITE, KVLayoutRecord, PluginRecord
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import (ATTENTION_MASK, INPUT_IDS, KV, PAST, POSITION_IDS, SEQ, WRITE_INDICES, Anchors,
                                       TensorIO, model_inputs, past_name, present_name, static_cache_inputs)
from trtllm_kit.models.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class NetworkContext:
    """What a layout's network rewrite may use: the flavour's module, the parsed network, the spec,
    the limits, the build options and the engine's (temporary) output directory."""

    trt: object
    network: object
    spec: ModelSpec
    limits: EngineLimits
    options: object
    out_dir: Path
    strongly_typed: bool = True
    precision_constraints: bool = False  # set by a rewrite that pins layer precisions (the builder obeys)
    gemm: str = "trt"  # "plugin": the weight matrix multiplies go to TrtllmKitGemm (resolve_gemm)
    norm: str = "trt"  # "plugin": each RMSNorm becomes one TrtllmKitRMSNorm layer (resolve_norm)
    rope: str = "trt"  # "plugin": each block's rotary of q and k becomes one TrtllmKitRotary layer (resolve_rope)
    onnx_path: Path | None = None  # the export the network was parsed from
    settings: dict = field(default_factory=dict)  # what the layout chose, for engine.json's builder_settings
    rope_scales: dict = field(default_factory=dict)  # rotary layer name -> q's scale it was made with (folds.py)
    folds: dict = field(default_factory=dict)  # what folds.py folded into the plugins: {"rms_norm": n, ...}
    # the weight inputs' arrays (name -> numpy, written after the rewrite): folds.py multiplies norm scales into them
    weight_arrays: dict = field(default_factory=dict)

    @property
    def act_dtype(self):
        """The activations' type, the KV cache inputs' (TensorRT 8.6's network types of tensors computed from the
        weight constants say float for an fp16 export, so a plugin pinned to its input's type ran in float between
        reformats: H200, llama-7b, ~1.3 ms of 8 ms per decode step)."""
        for i in range(self.network.num_inputs):
            t = self.network.get_input(i)
            if t.name.startswith("past_key_values."):
                return t.dtype
        raise ToolkitError("the network has no past_key_values.* input", "re-export it with `trtllm-kit export`")


class KVLayout:
    """Base class; subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    description: ClassVar[str]
    static_cache: ClassVar[bool]  # the engine's caches span max_seq and are updated in place (write_indices)
    # The runner binds the same buffers at the same shapes for every decode step of a generation, and each
    # ``present.*`` lands in its ``past_key_values.*`` buffer (in place, or copied by the runner): decode steps may
    # be replayed as CUDA graphs, and present and past must share a dtype.
    fixed_decode_shapes: ClassVar[bool] = False
    returns_new_rows: ClassVar[bool] = False  # present.* holds only this step's keys/values (B, nkv, new, hd)

    # -- build side ---------------------------------------------------------------------------
    def unavailable(self, flavor, options) -> str | None:
        """Why this layout cannot be built with ``flavor`` (None when it can)."""
        return None

    def engine_inputs(self, spec: ModelSpec, limits: EngineLimits) -> list[TensorIO]:
        return model_inputs(spec)

    def profiles(self, limits: EngineLimits, layout: str) -> list[ProfileSpec]:
        return sweep_profiles(limits, layout, static_cache=self.static_cache)

    def parse(self, parser, onnx_path: Path, limits: EngineLimits, weight_inputs: bool = False) -> bool:
        """Parse the export, rewritten as this layout needs it, into ``parser``'s network; ``weight_inputs``: the
        weight matrices as graph inputs (``weights.parse_graph``). Returns whether the parser accepted it."""
        from trtllm_kit.engine.weights import parse_graph

        return parse_graph(parser, onnx_path, None, weight_inputs)

    def prepare_network(self, ctx: NetworkContext) -> PluginRecord | None:
        """Rewire the parsed network in place; return the plugin shipped with the engine, if any."""
        return None

    def finish_network(self, ctx: NetworkContext, weight_names: set[str],
                       plugin: PluginRecord | None) -> PluginRecord | None:
        """Rewire after the weights became inputs (``weight_names``, empty when they stay in the plan); returns
        the plugin record ``prepare_network`` gave, updated for what the rewrite used."""
        return plugin

    def record(self, limits: EngineLimits, plugin: PluginRecord | None) -> KVLayoutRecord:
        return KVLayoutRecord(name=self.name, description=self.description, static_cache=self.static_cache,
                              max_seq=limits.max_seq if self.static_cache else None, plugin=plugin,
                              rewrite=PLUGIN_REWRITE)

    # -- run side -----------------------------------------------------------------------------
    def load_runtime(self, trt, engine_dir: Path, record: KVLayoutRecord) -> None:
        """Load the plugin library shipped beside the engine, if the record names one, before it deserializes.

        Raises:
            ToolkitError: the library is missing or differs from the one the engine was built with.
            PluginUnavailable: it does not load here or lacks a plugin the engine uses.
        """
        from trtllm_kit.engine import plugin as P
        from trtllm_kit.utils.fs import sha256_file

        if record.plugin is None:
            return
        path = engine_dir / record.plugin.file
        if not path.is_file() or sha256_file(path) != record.plugin.sha256:
            raise ToolkitError(f"{path} is missing or differs from the plugin the engine was built with",
                               "rebuild the engine")
        P.load_plugin(path, trt, gemm=record.plugin.gemm is not None, norm=record.plugin.norm is not None,
                      rope=record.plugin.rope is not None)

    def bound_past(self, cache, past_len: int) -> int:
        """The past length a step after ``past_len`` cached tokens binds (what picks its profile)."""
        return 0 if self.static_cache else past_len

    def new_cache(self, spec: ModelSpec, batch: int, capacity: int, limits: EngineLimits, dtypes: dict,
                  device: torch.device, values_transposed: bool = False):
        """The cache buffers of a generation (``values_transposed``: the engine's value caches are (B, nkv, hd,
        positions), ``builder_settings.past_attention`` ``split-vt`` (portable-static's default) or ``reduce-vt``)."""
        from trtllm_kit.runtime.kv_cache import PingPongCache

        return PingPongCache(spec, batch, capacity, dtypes[past_name(0, "key")], device)

    def feeds(self, cache, input_ids, position_ids, attention_mask, past_len: int, dtypes: dict) -> dict:
        """The non-cache inputs of a step, in the engine's dtypes."""
        return {INPUT_IDS: input_ids.to(dtypes[INPUT_IDS]).contiguous(),
                POSITION_IDS: position_ids.to(dtypes[POSITION_IDS]).contiguous(),
                ATTENTION_MASK: attention_mask.to(dtypes[ATTENTION_MASK]).contiguous()}


class PortableKV(KVLayout):
    name = "portable"
    description = ("past_key_values.* [batch, kv_heads_i, past, head_dim_i] in, present.* [batch, kv_heads_i, "
                   "past + new, head_dim_i] out; ping-pong two buffers")
    static_cache = False

    def prepare_network(self, ctx):
        """``--norm plugin``: each RMSNorm becomes a ``TrtllmKitRMSNorm`` layer (the library ships beside the
        engine); on TensorRT 8.6 the plugin layers also cut the one Myelin region that otherwise takes the
        whole graph. ``--rope plugin`` (portable-static only): each block's rotary of q and k becomes one
        ``TrtllmKitRotary`` layer, read by TensorRT's attention and the ``present.*.key`` output. With ``--gemm
        plugin`` (portable-static only) the library ships for ``finish_network``'s GEMM rewrite too. Otherwise the
        exported graph as is."""
        from trtllm_kit.engine import plugin as P

        if "plugin" not in (ctx.norm, ctx.gemm, ctx.rope):
            return None
        lib, shipped, shipped_sha256 = ship_plugin_library(ctx)
        if ctx.norm == "plugin":
            n = rewire_norms(ctx, rms_norm_inputs(ctx.onnx_path, Anchors.norms(ctx.spec.num_layers)))
            log.info("%d RMSNorms go to the %s plugin", n, P.NORM_NAME)
        ropes = rewire_rotaries(ctx) if ctx.rope == "plugin" else 0  # portable-static
        return PluginRecord(file=shipped.name, sha256=shipped_sha256, source_sha256=lib.source_sha256,
                            gemm=P.GEMM_NAME if lib.gemm else None, norm=P.NORM_NAME if ctx.norm == "plugin" else None,
                            rope=P.ROPE_NAME if ropes else None, links=[str(lib.cublaslt.library)] if lib.gemm else [])


def rewire_rotaries(ctx: NetworkContext) -> int:
    """Each block's rotary of q and k as one ``TrtllmKitRotary`` layer (``rewire_rotary``) whose outputs every reader
    of the exported q and rotated k reads instead (TensorRT's attention and ``present.*.key`` in portable-static).
    Returns how many blocks.

    Raises:
        ToolkitError: the export's rotary is not this version's exporter's.
    """
    from trtllm_kit.engine import plugin as P

    ropes = rotary_inputs(ctx.onnx_path, ctx.spec.num_layers)
    index = NetworkIndex(ctx.network)
    for i, found in ropes.items():
        q, k = rewire_rotary(ctx, index, i, found)
        index.redirect(index.tensors[Anchors.q(i)], q)
        index.redirect(index.tensors[Anchors.k_new(i)], k)
    log.info("%d blocks' rotary go to the %s plugin", len(ropes), P.ROPE_NAME)
    return len(ropes)


def _static_description(values_transposed: bool) -> str:
    """``kv_layout.description`` of a portable-static engine, its value caches transposed or laid out as the keys."""
    if values_transposed:
        caches = ("past_key_values.{i}.key [batch, kv_heads_i, capacity, head_dim_i] and past_key_values.{i}.value "
                  "[batch, kv_heads_i, head_dim_i, capacity] (the values transposed)")
        new = ("present.{i}.key [batch, kv_heads_i, new, head_dim_i] and present.{i}.value [batch, kv_heads_i, "
               "head_dim_i, new]")
    else:
        caches = "past_key_values.* [batch, kv_heads_i, capacity, head_dim_i]"
        new = "present.* [batch, kv_heads_i, new, head_dim_i]"
    return (f"{caches} in: a fixed-capacity cache the runner owns (positions past the written ones masked out); {new} "
            "out: this step's keys/values only, written by the runner at the next free position; the same shapes "
            "every decode step; TensorRT layers only (any version)")


class PortableStaticKV(PortableKV):
    """The portable layout's TensorRT layers with a fixed-capacity cache: the engine reads the cache and returns
    only the new tokens' keys/values (``new_rows_onnx``); the runner writes them in (``NewRowsCache``).

    Why: TensorRT 8.6 re-plans its fused (Myelin) regions whenever an input's shape changes, and in the portable
    layout the past grows by one every step (H200, llama-7b: 18.9 ms of host time per decode step,
    ``docs/benchmarks/h200-trt86/README.md``, seventh session). Here a generation's decode steps all bind a
    (B, nkv, capacity, hd) past and a (B, capacity + 1) mask: planned once, then replayable as a CUDA graph.
    """

    name = "portable-static"
    description = _static_description(values_transposed=True)
    description_rows = _static_description(values_transposed=False)  # reduce, matmul: the values laid out as keys
    fixed_decode_shapes = True
    returns_new_rows = True

    def parse(self, parser, onnx_path, limits, weight_inputs=False):
        from trtllm_kit.engine.weights import parse_graph

        return parse_graph(parser, onnx_path, new_rows_onnx(onnx_path, past_attention()), weight_inputs)

    def engine_inputs(self, spec, limits):
        """The exported inputs; in the ``split-vt`` (the default) and ``reduce-vt`` forms the value caches (B, nkv, hd,
        past)."""
        from trtllm_kit.engine.weights import VALUES_TRANSPOSED

        ios = model_inputs(spec)
        if past_attention() not in VALUES_TRANSPOSED:
            return ios
        return [TensorIO(io.name, io.dtype, (*io.dims[:2], io.dims[3], io.dims[2])) if io.name.endswith(".value")
                and io.name.startswith("past_key_values.") else io for io in ios]

    def record(self, limits, plugin):
        from trtllm_kit.engine.weights import VALUES_TRANSPOSED

        rec = super().record(limits, plugin)
        if past_attention() not in VALUES_TRANSPOSED:
            rec = rec.model_copy(update={"description": self.description_rows})
        return rec

    def profiles(self, limits, layout):
        """The portable layout's, with a past of at least one position in every profile: a prefill binds one masked
        position (``feeds``), so no tensor of the attention is ever empty. The prefill profile takes that one
        position only (with ``TRTLLM_KIT_PAST_ATTENTION=reduce`` a prefill's products are new tokens x past x
        head_dim: 85 GB at 256 x 128 x 639 x 128 in fp16); a single profile spans both."""
        lim = limits.checked()
        capacity = min(lim.max_seq - 1, lim.opt_input + 128)  # the decode profile's typical past
        out = []
        for p in sweep_profiles(lim, layout):
            if p.min[PAST] == 0 and p.max[PAST] == 0:  # prefill
                p = ProfileSpec(p.name, {**p.min, PAST: 1}, {**p.opt, PAST: 1}, {**p.max, PAST: 1})
            elif p.min[PAST] == 0:  # one profile for both
                p = ProfileSpec(p.name, {**p.min, PAST: 1}, {**p.opt, PAST: max(p.opt[PAST], capacity)},
                                {**p.max, PAST: lim.max_seq - 1})
            out.append(p)
        return out

    def bound_past(self, cache, past_len):
        return cache.capacity if past_len else 1

    def prepare_network(self, ctx):
        """``rewire_attention_multiplies``, then the portable layout's; on TensorRT 8.6 each ``present.*`` is first
        declared in its past's type (the runner copies it into that buffer)."""
        ctx.settings["past_attention"] = past_attention()
        rewire_attention_multiplies(ctx)
        if not ctx.strongly_typed:
            index = NetworkIndex(ctx.network)
            for i in range(ctx.spec.num_layers):
                for kv in KV:
                    index.outputs[present_name(i, kv)].dtype = index.inputs[past_name(i, kv)].dtype
        return super().prepare_network(ctx)

    def finish_network(self, ctx, weight_names, plugin):
        return rewire_weight_multiplies(ctx, weight_names, plugin)

    def new_cache(self, spec, batch, capacity, limits, dtypes, device, values_transposed=False):
        from trtllm_kit.runtime.kv_cache import NewRowsCache

        # the past a decode step can see: every position of the generation but the last, rounded up to a multiple of
        # 8 where the decode profile allows (the extra positions masked out), so that each row of the cache's scores
        # and probabilities starts 16-byte aligned (a fused kernel can load them as vectors)
        past = capacity - 1
        rounded = -(-past // 8) * 8
        if rounded <= limits.max_seq - 1:
            past = rounded
        cache = NewRowsCache(spec, batch, past, limits.max_input, dtypes[past_name(0, "key")], device,
                             values_transposed=values_transposed)
        cache.mask = torch.zeros(batch, cache.capacity + 1, dtype=dtypes[ATTENTION_MASK], device=device)
        cache.ids = torch.zeros(batch, 1, dtype=dtypes[INPUT_IDS], device=device)
        cache.pos = torch.zeros(batch, 1, dtype=dtypes[POSITION_IDS], device=device)
        return cache

    def feeds(self, cache, input_ids, position_ids, attention_mask, past_len, dtypes):
        """A decode step binds the whole cache (B, nkv, capacity, hd) and a mask (B, capacity + 1) saying which of
        its positions hold a token (the last column is the new token); a prefill binds one masked, zeroed position
        (``NewRowsCache.views``) and a mask (B, 1 + S). The new keys/values go to position ``past_len``. A decode
        step's ids, positions and mask keep their addresses, so a captured CUDA graph replays the same feeds."""
        S, C = input_ids.shape[1], cache.capacity
        cache.start(past_len)
        if past_len == 0:
            cache.mask.zero_()
            cache.mask[:, :S] = attention_mask[:, :S]  # in the cache once this step has run
            cache.mask[:, C] = 1  # a decode step's own token
            feeds = super().feeds(cache, input_ids, position_ids, attention_mask, past_len, dtypes)
            masked = torch.zeros(input_ids.shape[0], 1, dtype=dtypes[ATTENTION_MASK], device=input_ids.device)
            feeds[ATTENTION_MASK] = torch.cat((masked, feeds[ATTENTION_MASK][:, :S]), dim=1)  # the bound position
            return feeds
        cache.mask[:, past_len - 1] = attention_mask[:, past_len - 1]  # what the step before wrote
        cache.ids.copy_(input_ids)
        cache.pos.copy_(position_ids)
        return {INPUT_IDS: cache.ids, POSITION_IDS: cache.pos, ATTENTION_MASK: cache.mask}


def past_attention() -> str:
    """How a portable-static engine attends over the past (``new_rows_onnx``'s ``past_form``): ``"split-vt"``, or
    ``TRTLLM_KIT_PAST_ATTENTION``'s choice (``reduce-vt``, ``reduce``, ``matmul``: the earlier forms, for A/Bs).

    Why: H200, TensorRT 8.6, GEMM + RMSNorm plugins, level 1. llama-7b cut to 2 blocks, ms of CUDA kernels per decode
    step at batch 1 / 64 / 256 (``scripts/profile_layers.py --kernels``, fourteenth session): MatMuls 0.463 / 1.534 /
    4.877, reduce 0.449 / 1.537 / 4.966, reduce with the rotary plugin 0.423 / 0.955 / 2.709, of which the values' sum
    over the positions (a reduction across rows) 0.80 ms a block at batch 256. Whole llama-7b with the rotary plugin
    and CUDA graphs, tok/s at batch 1 / 16 / 64 / 256 (``scripts/bench_trt.py``): reduce 221 / 2,144 / 4,548 / 6,175
    (fourteenth session), reduce-vt 219 / 2,072 / 5,045 / 7,037 (fifteenth session; its values' sum 0.58 ms a block
    at batch 256), split-vt 226 / 2,600 / 6,959 / 11,502 (sixteenth session; the values' sum 0.15 ms a block at batch
    256, 2-block step 1.52 ms against reduce-vt's 2.40; its TensorRT build 40 s longer: 247 s against 208 s).

    Raises:
        ToolkitError: an unknown value of that variable.
    """
    from trtllm_kit.engine.weights import PAST_ENV, PAST_FORMS, knob

    return knob(PAST_ENV, PAST_FORMS[0])


def rewire_attention_multiplies(ctx: NetworkContext) -> int:
    """The attention's multiplies of ``new_rows_onnx`` (layers named ``*.past/node``, ``*.new/node``): each that reads a
    transpose of its second input's last two axes reads that input as it is, with TensorRT's transposed operand
    (``MatrixOperation.TRANSPOSE``) in place of the transpose layer; without strong typing (TensorRT 8.6) each runs in
    the activations' type.

    Why: TensorRT 8.6 built the transposes of the cached keys as copies, and ran these multiplies in float after a
    reformat of the whole cache (the exported scores are cast to float for the softmax right after): H200, llama-7b
    cut to 2 blocks, batch 256, 139 cached positions: 0.5 ms a block for the copy, 5.6 ms for the float multiplies
    and 1.4 ms for the reformats of a 8.7 ms step (``scripts/profile_layers.py --kernels``, thirteenth session).

    Returns:
        How many multiplies read their keys untransposed.
    """
    trt, network = ctx.trt, ctx.network
    index = NetworkIndex(network)
    untransposed = 0
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        if layer.type != trt.LayerType.MATRIX_MULTIPLY or not layer.name.endswith((".past/node", ".new/node")):
            continue
        layer.__class__ = trt.IMatrixMultiplyLayer
        shuffle = index.producers.get(layer.get_input(1).name)
        if shuffle is not None and shuffle.type == trt.LayerType.SHUFFLE:
            shuffle.__class__ = trt.IShuffleLayer
            n = len(shuffle.get_input(0).shape)
            swap = tuple(range(n - 2)) + (n - 1, n - 2)
            only_swaps = (tuple(shuffle.first_transpose)[:n] == swap and shuffle.reshape_dims is None
                          and tuple(shuffle.second_transpose)[:n] == tuple(range(n)))
            if n >= 2 and shuffle.num_inputs == 1 and only_swaps and layer.op1 == trt.MatrixOperation.NONE:
                layer.set_input(1, shuffle.get_input(0))
                layer.op1 = trt.MatrixOperation.TRANSPOSE
                untransposed += 1
        pin_to_activations(ctx, layer)
    return untransposed


def rewire_weight_multiplies(ctx: NetworkContext, weight_names: set[str], plugin: PluginRecord | None):
    """``--gemm plugin``: the multiplies by weight inputs become ``TrtllmKitGemm`` layers, and (``TRTLLM_KIT_FOLD``
    on) the norms, SwiGLU, residual adds and, with the rotary plugin, the rotary embedding fold into them
    (``folds.py``). Returns the plugin record, without the GEMM plugin where nothing was rewired.

    Raises:
        ToolkitError: ``--gemm plugin`` and no multiply by a weight input in the network.
    """
    from trtllm_kit.engine.folds import fold_choice, fold_into_gemms, fold_rope_into_gemms, fold_rotary_qkv
    from trtllm_kit.engine.gemm import rewire_gemms

    if ctx.gemm != "plugin":
        return plugin
    gemms: list = []
    n = rewire_gemms(ctx, weight_names, gemms)
    log.info("%d matrix multiplies by weight inputs go to the %s plugin (cuBLASLt)", n, "TrtllmKitGemm")
    for li in range(ctx.network.num_layers):  # a fused multiply's output slices stay in the activations' type
        layer = ctx.network.get_layer(li)
        if layer.name.startswith("fused.slice."):
            pin_to_activations(ctx, layer)
    if n and fold_choice(ctx.gemm) == "on":
        made: dict = {}
        ctx.folds = fold_into_gemms(ctx, gemms, made)
        if ctx.rope == "plugin":
            ctx.folds["rotary_qkv"] = fold_rotary_qkv(ctx)
            ctx.folds["rotary_gemm"] = fold_rope_into_gemms(ctx, made)
        log.info("folded into the plugins (TRTLLM_KIT_FOLD=0: none): %s",
                 ", ".join(f"{v} {k}" for k, v in ctx.folds.items()))
    if n == 0:
        if ctx.options.gemm == "plugin":
            raise ToolkitError("--gemm plugin found no matrix multiply by a weight input in the network",
                               "use --gemm trt or auto")
        ctx.gemm = "trt"  # auto: nothing to rewire; the engine does not use the GEMM plugin
        return plugin.model_copy(update={"gemm": None, "links": []})
    return plugin


class StaticKV(KVLayout):
    """Shared by the in-place layouts: static caches, a write position per row, an aliased present."""

    static_cache = True
    fixed_decode_shapes = True

    def engine_inputs(self, spec, limits):
        return static_cache_inputs(spec, limits.max_seq)

    def parse(self, parser, onnx_path, limits, weight_inputs=False):
        from trtllm_kit.engine.weights import parse_graph

        return parse_graph(parser, onnx_path, static_cache_onnx(onnx_path, limits.max_seq), weight_inputs)

    def new_cache(self, spec, batch, capacity, limits, dtypes, device, values_transposed=False):
        from trtllm_kit.runtime.kv_cache import StaticCache

        cache = StaticCache(spec, batch, limits.max_seq, dtypes[past_name(0, "key")], device)
        cache.mask = torch.zeros(batch, limits.max_seq, dtype=dtypes[ATTENTION_MASK], device=device)
        cache.write = torch.zeros(batch, dtype=dtypes[WRITE_INDICES], device=device)
        cache.ids = torch.zeros(batch, 1, dtype=dtypes[INPUT_IDS], device=device)
        cache.pos = torch.zeros(batch, 1, dtype=dtypes[POSITION_IDS], device=device)
        return cache

    def feeds(self, cache, input_ids, position_ids, attention_mask, past_len, dtypes):
        S = input_ids.shape[1]
        if past_len == 0:
            cache.mask.zero_()
        cache.mask[:, past_len:past_len + S] = attention_mask[:, past_len:past_len + S]
        cache.write.fill_(past_len)
        if S == 1:  # decode: fixed addresses, so a captured CUDA graph replays the same feeds
            cache.ids.copy_(input_ids)
            cache.pos.copy_(position_ids)
            ids, pos = cache.ids, cache.pos
        else:
            ids, pos = (x.to(dtypes[n]).contiguous() for n, x in ((INPUT_IDS, input_ids), (POSITION_IDS, position_ids)))
        return {INPUT_IDS: ids, POSITION_IDS: pos, ATTENTION_MASK: cache.mask, WRITE_INDICES: cache.write}


class NativeInplaceKV(StaticKV):
    name = "inplace"
    description = ("static [batch, kv_heads_i, max_seq, head_dim_i] per layer, updated in place at write_indices "
                   "by TensorRT's KV-cache layers; present.* alias past_key_values.*")

    def unavailable(self, flavor, options):
        if flavor.inplace_kv:
            return None
        return f"{flavor.name} {flavor.version} has no native KV-cache layers (TensorRT >= 10.15 or TensorRT-RTX)"

    def prepare_network(self, ctx):
        trt, network = ctx.trt, ctx.network
        index = NetworkIndex(network)
        for i in range(ctx.spec.num_layers):
            for kv in KV:
                old = index.outputs[present_name(i, kv)]
                update = index.producers[old.name].get_input(1)  # (B, nkv, S, hd): this step's keys/values
                layer = network.add_kv_cache_update(index.inputs[past_name(i, kv)], update,
                                                    index.inputs[WRITE_INDICES], trt.KVCacheMode.LINEAR)
                layer.name = f"kv_cache_update.{i}.{kv}"
                index.replace_output(old, layer.get_output(0), present_name(i, kv))
        return None


class PluginKV(StaticKV):
    name = "plugin"
    description = ("static [batch, kv_heads_i, max_seq, head_dim_i] per layer; the TrtllmKitKVCacheAttention "
                   "plugin writes the new tokens at write_indices in place and attends over the valid prefix; "
                   "present.* alias past_key_values.*")

    def unavailable(self, flavor, options):
        if not flavor.plugin_v2:
            return f"{flavor.name} {flavor.version} does not load IPluginV2DynamicExt plugins"
        from trtllm_kit.engine.plugin import PluginUnavailable, find_nvcc, find_trt_include

        try:
            find_nvcc()
            find_trt_include(flavor.trt, options.trt_include)
        except PluginUnavailable as e:
            return str(e)
        return None

    def prepare_network(self, ctx):
        from trtllm_kit.engine import plugin as P

        trt, network = ctx.trt, ctx.network
        lib, shipped, shipped_sha256 = ship_plugin_library(ctx)
        if ctx.norm == "plugin":
            n = rewire_norms(ctx, rms_norm_inputs(ctx.onnx_path, Anchors.norms(ctx.spec.num_layers)))
            log.info("%d RMSNorms go to the %s plugin", n, P.NORM_NAME)
        index = NetworkIndex(network)
        inputs, tensors = index.inputs, index.tensors
        ropes = rotary_inputs(ctx.onnx_path, ctx.spec.num_layers) if ctx.rope == "plugin" else {}
        mask = inputs[ATTENTION_MASK]
        if mask.dtype != trt.int32:  # TensorRT >= 10 keeps int64 inputs; the plugin reads int32
            mask = network.add_cast(mask, trt.int32).get_output(0)
        for i, L in enumerate(ctx.spec.layers):
            try:
                q, k, v, attn = (tensors[n] for n in (Anchors.q(i), Anchors.k_new(i), Anchors.v_new(i), Anchors.attn(i)))
            except KeyError as e:
                raise ToolkitError(f"the ONNX graph has no tensor {e.args[0]}: it was not written by this version's "
                                   "exporter", "re-export it with `trtllm-kit export`, or use --kv-mode portable")
            if i in ropes:  # q and k straight from one TrtllmKitRotary layer; the exported rotary goes unread
                q, k = rewire_rotary(ctx, index, i, ropes[i])
            k_cache, v_cache = inputs[past_name(i, "key")], inputs[past_name(i, "value")]
            layer = P.add_kv_attention(trt, network, q, k, v, k_cache, v_cache, inputs[WRITE_INDICES], mask,
                                       L.n_heads, L.n_kv_heads, L.head_dim, name=f"kv_attention.{i}")
            pin_to_activations(ctx, layer)  # 8.6: in the caches' type, so no reformat copies the cache (in place)
            index.redirect(attn, layer.get_output(0))
            for k_out, kv in ((1, "key"), (2, "value")):
                index.replace_output(index.outputs[present_name(i, kv)], layer.get_output(k_out), present_name(i, kv))
                if not ctx.strongly_typed:  # 8.6: an output's type is the builder's choice unless set; the
                    layer.get_output(k_out).dtype = k_cache.dtype  # in-place cache needs past's (kernel tests set it)
        if ropes:
            log.info("%d blocks' rotary go to the %s plugin", len(ropes), P.ROPE_NAME)
        return PluginRecord(file=shipped.name, sha256=shipped_sha256, source_sha256=lib.source_sha256,
                            name=P.PLUGIN_NAME, version=P.PLUGIN_VERSION, gemm=P.GEMM_NAME if lib.gemm else None,
                            norm=P.NORM_NAME if ctx.norm == "plugin" else None,
                            rope=P.ROPE_NAME if ropes else None,
                            links=[str(lib.cublaslt.library)] if lib.gemm else [])

    def finish_network(self, ctx, weight_names, plugin):
        return rewire_weight_multiplies(ctx, weight_names, plugin)


KV_LAYOUTS: dict[str, KVLayout] = {cls.name: cls() for cls in (PortableKV, PortableStaticKV, NativeInplaceKV, PluginKV)}


def get_layout(name: str) -> KVLayout:
    if name not in KV_LAYOUTS:
        raise ToolkitError(f"unknown --kv-mode {name!r}", f"choose auto, {', '.join(KV_LAYOUTS)}")
    return KV_LAYOUTS[name]


def resolve_kv_layout(requested: str, flavor, options, notes: list[str] | None = None) -> KVLayout:
    """``auto``: native KV layers where the flavour has them, else the plugin where it can be compiled,
    else portable-static (logging why). A named layout the flavour cannot build is an error naming the fallback.

    Args:
        notes: where ``auto``'s reasons go instead of the log (the caller logs them once the build goes ahead).

    Raises:
        ToolkitError: an unknown or unavailable layout.
    """
    say = notes.append if notes is not None else log.info
    if requested == "auto":
        for name in ("inplace", "plugin"):
            reason = KV_LAYOUTS[name].unavailable(flavor, options)
            if reason is None:
                say(f"KV cache: {name} (--kv-mode auto)")
                return KV_LAYOUTS[name]
            say(f"KV cache: not {name}: {reason}")
        say("KV cache: portable-static (--kv-mode auto)")
        return KV_LAYOUTS["portable-static"]
    layout = get_layout(requested)
    reason = layout.unavailable(flavor, options)
    if reason:
        raise ToolkitError(f"--kv-mode {requested}: {reason}",
                          "use --kv-mode portable-static or portable (TensorRT layers, work everywhere) or auto")
    return layout


def plugin_library_unavailable(flavor, options) -> str | None:
    """Why the toolkit's plugin library cannot be compiled and loaded with this flavour here (None when it can): what
    the plugin layout needs (IPluginV2DynamicExt, nvcc, the TensorRT headers), for the plugins other layouts use."""
    return KV_LAYOUTS["plugin"].unavailable(flavor, options)


def _choice(notes: list[str] | None, what: str, plugin: str, flag: str, asked: str, chosen: str) -> str:
    """Log (or note) the choice ``chosen`` for ``flag asked`` as the resolvers word it; returns ``chosen``."""
    (notes.append if notes is not None else log.info)(
        f"{what}: {f'the {plugin} plugin' if chosen == 'plugin' else 'the exported ops'} ({flag} {asked}"
        f"{'; the plugin comes with --kv-mode plugin' if asked == 'auto' and chosen == 'trt' else ''})")
    return chosen


def _refuse_without_library(option: str, options, layout_name: str, flavor) -> None:
    """``--{option} plugin`` outside the plugin layout (which is only chosen where the library works) where the plugin
    library cannot be compiled or loaded with ``flavor`` here (None: not checked).

    Raises:
        ToolkitError: naming why, and the exported ops as the fix.
    """
    if getattr(options, option) == "plugin" and layout_name != "plugin" and flavor is not None:
        reason = plugin_library_unavailable(flavor, options)
        if reason:
            raise ToolkitError(f"--{option} plugin: {reason}", f"use --{option} trt or auto (the exported ops)")


def resolve_norm(options, layout_name: str, notes: list[str] | None = None, flavor=None) -> str:
    """``"plugin"`` (each RMSNorm one ``TrtllmKitRMSNorm`` layer, from the toolkit's plugin library) or ``"trt"``
    (the exported ops). ``--norm auto`` takes the plugin with the plugin KV layout; ``--norm plugin`` also works
    with the portable layouts (where the norms cut TensorRT 8.6's whole-graph Myelin region). The choice is logged.

    Args:
        options: the build options (``norm``, ``trt_include``).
        layout_name: the KV layout the build uses.
        notes: where the choice goes instead of the log (as ``resolve_kv_layout``'s).
        flavor: the TensorRT flavour; with it, ``--norm plugin`` in the portable layout is checked to be
            compilable and loadable here (what the plugin layout needs) before any work.

    Raises:
        ToolkitError: ``--norm plugin`` with the inplace KV layout, or in the portable layout where the plugin
            library cannot be compiled or loaded (nvcc, TensorRT headers, an RTX flavour).
    """
    from trtllm_kit.engine.gemm import CONFLICT_HINTS, norm_option_conflict

    conflict = norm_option_conflict(options.norm, layout_name)
    if conflict:
        raise ToolkitError(f"--norm plugin: {conflict}", CONFLICT_HINTS["norm"])
    _refuse_without_library("norm", options, layout_name, flavor)
    norm = "plugin" if options.norm == "plugin" or (options.norm == "auto" and layout_name == "plugin") else "trt"
    return _choice(notes, "RMSNorm", "TrtllmKitRMSNorm", "--norm", options.norm, norm)


def resolve_rope(options, layout_name: str, notes: list[str] | None = None, flavor=None) -> str:
    """``"plugin"`` (each block's rotary one ``TrtllmKitRotary`` layer, from the toolkit's plugin library) or
    ``"trt"`` (the exported ops). ``--rope auto`` takes the plugin with the plugin KV layout; ``--rope plugin`` also
    works with portable-static (q and k then reach TensorRT's attention from the plugin). The choice is logged.

    Args:
        options: the build options (``rope``, ``trt_include``).
        layout_name: the KV layout the build uses.
        notes: where the choice goes instead of the log (as ``resolve_kv_layout``'s).
        flavor: the TensorRT flavour; with it, ``--rope plugin`` in portable-static is checked to be compilable and
            loadable here before any work.

    Raises:
        ToolkitError: ``--rope plugin`` with another KV layout, or in portable-static where the plugin library
            cannot be compiled or loaded.
    """
    from trtllm_kit.engine.gemm import CONFLICT_HINTS, rope_option_conflict

    conflict = rope_option_conflict(options.rope, layout_name)
    if conflict:
        raise ToolkitError(f"--rope plugin: {conflict}", CONFLICT_HINTS["rope"])
    _refuse_without_library("rope", options, layout_name, flavor)
    rope = "plugin" if options.rope == "plugin" or (options.rope == "auto" and layout_name == "plugin") else "trt"
    return _choice(notes, "rotary", "TrtllmKitRotary", "--rope", options.rope, rope)


def rotary_inputs(onnx_path: Path, num_layers: int) -> dict[int, tuple[str, str, str, str, float]]:
    """Each block's rotary operands, read from the exported graph: block -> (q_lin, k_lin, cos, sin, scale).

    The exporter writes ``q(i) = Mul(R(Transpose(Reshape(q_lin))), Cast?(scale))`` (``scale`` a scalar
    initializer: q's attention scale) and ``k_new(i) = R(Transpose(Reshape(k_lin)))`` with ``R(x) = Add(Mul(x, cos),
    Mul(Concat(Neg(x2), x1), sin))`` (``export/graph.py`` ``_rotate``); other forms of these ops are refused.

    Raises:
        ToolkitError: a block's q or k not of that form (an export from another version).
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}

    def made_by(tensor: str | None, op: str):
        node = producers.get(tensor) if tensor is not None else None
        return node if node is not None and node.op_type == op else None

    def rotated(tensor: str | None):  # R(Transpose(Reshape(lin))) -> (lin, cos, sin), else None
        add = made_by(tensor, "Add")
        first, second = (made_by(add.input[j], "Mul") if add is not None else None for j in (0, 1))
        if first is None or second is None or made_by(second.input[0], "Concat") is None:
            return None
        reshape = made_by(getattr(made_by(first.input[0], "Transpose"), "input", [None])[0], "Reshape")
        return (reshape.input[0], first.input[1], second.input[1]) if reshape is not None else None

    inits = {t.name: t for t in model.graph.initializer}

    def scalar(tensor: str) -> float | None:  # Cast?(a one-element initializer) -> its value
        cast = made_by(tensor, "Cast")
        init = inits.get(cast.input[0] if cast is not None else tensor)
        if init is None or init.data_location == onnx.TensorProto.EXTERNAL:
            return None
        value = onnx.numpy_helper.to_array(init)
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    out = {}
    for i in range(num_layers):
        scaled = made_by(Anchors.q(i), "Mul")
        q = rotated(scaled.input[0]) if scaled is not None else None
        k = rotated(Anchors.k_new(i))
        scale = scalar(scaled.input[1]) if scaled is not None else None
        if q is None or k is None or (q[1], q[2]) != (k[1], k[2]) or scale is None:
            raise ToolkitError(f"{onnx_path}: block {i}'s rotary is not what this version's exporter writes",
                               "re-export it with `trtllm-kit export`, or build with --rope trt")
        out[i] = (q[0], k[0], q[1], q[2], scale)
    return out


def rewire_rotary(ctx: NetworkContext, index: NetworkIndex, i: int, found: tuple[str, str, str, str, float]):
    """Block ``i``'s rotary (``rotary_inputs``: tensor names and q's scale) as one ``TrtllmKitRotary`` layer; returns
    its (q, k) outputs, (B, nh, S, hd) and (B, nkv, S, hd), which the attention plugin reads instead of the
    exported ones."""
    from trtllm_kit.engine import plugin as P

    tensors = {**index.tensors, **index.inputs}
    *names, scale = found
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ToolkitError(f"the parsed network has no tensor {missing[0]}", "build with --rope trt")
    L = ctx.spec.layers[i]
    q_lin, k_lin, cos, sin = (tensors[n] for n in names)
    name = f"rotary.{i}"
    layer = P.add_rotary(ctx.trt, ctx.network, q_lin, k_lin, cos, sin, L.n_heads, L.n_kv_heads, L.head_dim,
                         scale, name=name)
    ctx.rope_scales[name] = scale
    pin_to_activations(ctx, layer)
    return layer.get_output(0), layer.get_output(1)


def pin_to_activations(ctx: NetworkContext, layer) -> None:
    """Without strong typing (TensorRT 8.6) keep a plugin layer and its outputs in the activations' type
    (``ctx.act_dtype``); a no-op for strongly typed networks, whose types follow the export."""
    if ctx.strongly_typed:
        return
    layer.precision = ctx.act_dtype
    for o in range(layer.num_outputs):
        layer.set_output_type(o, ctx.act_dtype)
    ctx.precision_constraints = True


def ship_plugin_library(ctx: NetworkContext):
    """Compile (or reuse) the toolkit's plugin library for this build, copy it into the engine directory and load
    that copy. Returns (the ``PluginLibrary``, the shipped path, its sha256).

    With ``ctx.gemm == "plugin"`` the GEMM plugin is compiled in; when that fails under ``--gemm auto`` the build
    goes on without it (``ctx.gemm`` becomes ``"trt"``, with a warning).

    Raises:
        PluginUnavailable: nvcc, the TensorRT headers or (``--gemm plugin``) cuBLASLt missing, or nvcc failed.
    """
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.utils.fs import sha256_file

    trt = ctx.trt
    try:
        lib = P.compile_plugin(trt, include=ctx.options.trt_include, log=log.info, gemm=ctx.gemm == "plugin")
    except P.PluginUnavailable as e:
        if ctx.gemm != "plugin" or ctx.options.gemm != "auto":
            raise
        log.warning("GEMM: TensorRT's matrix multiplies (--gemm auto; the GEMM plugin did not compile: %s)",
                    e.message)
        ctx.gemm = "trt"
        lib = P.compile_plugin(trt, include=ctx.options.trt_include, log=log.info)
    # The copy that ships is the one loaded and hashed: a build beside this one may replace the cached
    # library in between (H200, 3 plugin builds at once: the recorded hash was another compile's).
    shipped = ctx.out_dir / lib.path.name
    shutil.copyfile(lib.path, shipped)
    shipped_sha256 = sha256_file(shipped)
    P.load_plugin(shipped, trt, gemm=lib.gemm, norm=ctx.norm == "plugin", rope=ctx.rope == "plugin")
    return lib, shipped, shipped_sha256


def rms_norm_inputs(onnx_path: Path, anchors: list[str]) -> dict[str, str]:
    """Each RMSNorm's input tensor, read from the exported graph: norm output (anchor) -> x.

    Args:
        onnx_path: the export's ``model.onnx`` (its weights are not loaded).
        anchors: the norms' output names (``Anchors.norms``).

    Returns:
        {anchor: name of x}, x (B, S, H) the norm's input (the residual stream; the final norm's may be cut to
        the last position, (B, 1, H)).

    The exporter writes ``anchor = Mul(Cast?(Mul(Mul(Cast?(x), r), inv)), weight)`` (``export/graph.py``
    ``_rms_norm``); anything else is refused.

    Raises:
        ToolkitError: an anchor missing or not of that form (an export from another version).
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}

    def made_by(tensor: str, op: str):
        node = producers.get(tensor)
        return node if node is not None and node.op_type == op else None

    def through_cast(tensor: str) -> str:
        cast = made_by(tensor, "Cast")
        return cast.input[0] if cast is not None else tensor

    out = {}
    for anchor in anchors:
        scale = made_by(anchor, "Mul")
        normed = made_by(through_cast(scale.input[0]), "Mul") if scale is not None else None
        scaled = made_by(normed.input[0], "Mul") if normed is not None else None
        if scaled is None or made_by(normed.input[1], "Reciprocal") is None or \
                made_by(scaled.input[1], "Reciprocal") is None:
            raise ToolkitError(f"{onnx_path}: {anchor} is not an RMSNorm as this version's exporter writes it",
                               "re-export it with `trtllm-kit export`, or build with --norm trt")
        out[anchor] = through_cast(scaled.input[0])
    return out


def rewire_norms(ctx: NetworkContext, inputs: dict[str, str]) -> int:
    """Each RMSNorm (anchor -> its input x, ``rms_norm_inputs``) becomes one ``TrtllmKitRMSNorm`` layer reading x
    and the scale the exported ``Mul`` read; the anchor's readers move to it (the old ops are left unread).

    Args:
        ctx: the network being prepared (the plugin library loaded; ``strongly_typed`` False pins each norm to
            its input's type, TensorRT 8.6).
        inputs: from ``rms_norm_inputs``.

    Returns:
        How many norms were rewired.

    Raises:
        ToolkitError: a tensor missing from the parsed network, or the plugin rejecting eps.
        PluginUnavailable: the plugin is not loaded.
    """
    from trtllm_kit.engine import plugin as P

    trt, network = ctx.trt, ctx.network
    index = NetworkIndex(network)
    tensors = {**index.tensors, **index.inputs}
    for anchor, x_name in inputs.items():
        if anchor not in tensors or x_name not in tensors:
            missing = anchor if anchor not in tensors else x_name
            raise ToolkitError(f"the parsed network has no tensor {missing}", "build with --norm trt")
        old = tensors[anchor]
        w = index.producers[anchor].get_input(1)  # the exported Mul(normalised, weight)
        layer = P.add_rms_norm(trt, network, tensors[x_name], w, ctx.spec.rms_norm_eps, name=f"rms_norm.{anchor}")
        pin_to_activations(ctx, layer)
        index.redirect(old, layer.get_output(0))
    return len(inputs)


# -- graph and network surgery helpers ------------------------------------------------------------
def static_cache_onnx(onnx_path: Path, max_seq: int) -> bytes:
    """The exported graph (weights left where they are) rewritten for static caches.

    Caches and the attention mask get the static length ``max_seq``; a ``write_indices`` [batch]
    (int32) input says where the new tokens go, and the causal mask's query positions come from it:
    ``Range(0, S) + write_indices[0]``. The Range's bounds stay shape-derived on purpose: had
    ``write_indices`` fed them, TensorRT 8.6 would make it a shape tensor, read from host memory
    (measured on an H200: the plugin engine wrote its caches at garbage positions).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    for inp in g.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name.startswith("past_key_values."):
            dims[2].Clear()
            dims[2].dim_value = max_seq
        elif inp.name == ATTENTION_MASK:
            dims[1].Clear()
            dims[1].dim_value = max_seq
    g.input.append(helper.make_tensor_value_info(WRITE_INDICES, TensorProto.INT32, ["batch_size"]))
    idx = next((i for i, n in enumerate(g.node) if n.output and n.output[0] == Anchors.QUERY_POS), None)
    if idx is None:
        raise ToolkitError(f"{onnx_path} was not written by this toolkit's exporter (no {Anchors.QUERY_POS} node)",
                           "re-export it with `trtllm-kit export`, or use --kv-mode portable")
    const = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor("v", TensorProto.INT64, [], [v]))  # noqa: E731
    range_node = g.node[idx]
    before = [const("ip_zero", 0), const("ip_one", 1),
              helper.make_node("Squeeze", [Anchors.SEQ_LEN, Anchors.AXES0], ["ip_seq"])]
    range_node.input[:] = ["ip_zero", "ip_seq", "ip_one"]  # (S,): 0..S-1, its length from shapes only
    range_node.output[0] = "ip_offsets"
    after = [helper.make_node("Gather", [WRITE_INDICES, "ip_zero"], ["ip_first"], axis=0),  # scalar, on the device
             helper.make_node("Cast", ["ip_first"], ["ip_begin"], to=TensorProto.INT64),
             helper.make_node("Add", ["ip_offsets", "ip_begin"], [Anchors.QUERY_POS])]
    for k, node in enumerate(after):
        g.node.insert(idx + 1 + k, node)
    for k, node in enumerate(before):
        g.node.insert(idx + k, node)
    return model.SerializeToString()


def new_rows_onnx(onnx_path: Path, past_form: str | None = None) -> bytes:
    """The exported graph (weights left where they are) attending over the past and the new tokens apart, and
    returning only the new tokens' keys and values.

    Each ``present.{i}.key``/``value`` output becomes this step's keys (after rotary) and values,
    (B, kv_heads_i, S, head_dim_i), read from the anchors ``k_new(i)``/``v_new(i)``. The exported attention reads
    ``Concat(past, new)``, a copy of the whole cache that a builder may keep per block (TensorRT 8.6, llama-7b,
    batch 256 x 640 positions: 74 GB of activation memory per execution context, H200, 2026-11-30); here the scores
    are ``Concat(q @ past^T, q @ new^T)`` over the last axis and the output ``probs[..., :P] @ past_v +
    probs[..., P:] @ new_v``, the same sums with the cache read in place (the shape ops between the Concat and each
    MatMul, Transpose and Unsqueeze of the grouped-query form, are applied to both halves). The past
    (B, kv_heads_i, P, head_dim_i, P >= 1) and the mask (B, P + S) are as exported: a caller may bind a
    fixed-capacity past with the positions not yet written masked out (``PortableStaticKV``).

    ``past_form="reduce"``: the past's two products are broadcast multiplies summed over an axis instead of MatMuls
    (``"matmul"``: MatMuls): scores ``ReduceSum(q[..., :, None, :] * past_k[..., None, :, :], -1)``, output
    ``ReduceSum(probs_past[..., None] * past_v[..., None, :, :], -2)``, each sum in float. ``"reduce-vt"``: the
    same, with the value caches and ``present.{i}.value`` stored (B, kv_heads_i, head_dim_i, P) so that the values'
    sum, ``ReduceSum(probs_past[..., None, :] * past_v[..., None, :, :], -1)``, runs along the contiguous axis
    (``past_attention`` has the measurements). ``"split-vt"`` (the default): as ``reduce-vt``, with the exported
    softmax (Cast, Where(mask), Softmax, Cast) computed over the two halves apart, never as one row of P + S: each
    half masked with its slice of the mask (sliced once for every block), one maximum over both, ``e = Exp(scores -
    max)`` per half, and the output ``(ReduceSum(e_past * past_v) + e_new @ new_v) / (sum(e_past) + sum(e_new))`` in
    float, so that the values' sum reads a row of P weights (16-byte aligned where P is a multiple of 8, as
    ``PortableStaticKV.new_cache`` makes it) instead of a slice of a row of P + 1 with the softmax's division fused
    in (TensorRT 8.6 on an H200, batch 256: 0.58 ms a block for that kernel against 0.10 ms for the keys' aligned
    one, fifteenth session; 0.15 ms a block in this form, sixteenth session). Why no MatMul reads the cache:
    TensorRT 8.6's fused (Myelin) regions turned the two score MatMuls that share q back into one over a copy of
    ``Concat(past, new)``, and the two output MatMuls over slices of one softmax likewise, and transposed the keys
    for its kernels: H200, llama-7b cut to 2 blocks, batch 256, 139 cached positions: ~1.5 ms a block of copies
    against ~0.12 ms to read the block's cache once (``scripts/profile_layers.py --kernels``, thirteenth session). A
    decode step's product is the size of the past; a prefill binds a one-position past (``PortableStaticKV.feeds``),
    so neither is larger than the cache.

    Raises:
        ToolkitError: the graph is not of that form (not written by this toolkit's exporter), or ``past_form`` not one
            of ``PAST_FORMS``.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from trtllm_kit.engine.weights import PAST_FORMS, VALUES_TRANSPOSED

    def refuse(what: str):
        raise ToolkitError(f"{onnx_path} was not written by this toolkit's exporter ({what})",
                           "re-export it with `trtllm-kit export`, or use --kv-mode portable")

    past_form = past_form or PAST_FORMS[0]  # unnamed: the default form
    if past_form not in PAST_FORMS:
        raise ToolkitError(f"unknown past attention form {past_form!r}", f"use {', '.join(PAST_FORMS)}")
    values_t, split = past_form in VALUES_TRANSPOSED, past_form == "split-vt"
    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    if values_t:  # past_key_values.i.value (B, nkv, hd, past)
        for inp in g.input:
            if inp.name.startswith("past_key_values.") and inp.name.endswith(".value"):
                dims = inp.type.tensor_type.shape.dim
                a, b = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
                a.CopyFrom(dims[2])
                b.CopyFrom(dims[3])
                dims[2].CopyFrom(b)
                dims[3].CopyFrom(a)
    producers = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for j, t in enumerate(n.input):
            readers.setdefault(t, []).append((n, j))
    outputs = {o.name: o for o in g.output}
    g.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
                         (("nr_two", [2]), ("nr_zero", [0]), ("nr_last", [-1]), ("nr_end", [np.iinfo(np.int64).max]),
                          ("nr_m2", [-2]), ("nr_m3", [-3])))
    elem = {i.name: i.type.tensor_type.elem_type for i in g.input}
    replaced: dict[int, list] = {}  # id(node) -> the nodes that take its place ([] drops it)
    scores: dict[int, str] = {}  # split-vt: block -> the exported scores' name (the halves are named after it)
    mask_halves: dict[str, dict] = {}  # split-vt: the mask -> its past and new positions (every block's P is the same)

    def exported_softmax(probs: str, scores_name: str) -> list:
        """The exported ops from the scores to the probabilities: Cast (float), Where (mask), Softmax, Cast."""
        ops, t = [], probs
        for op in ("Cast", "Softmax", "Where", "Cast"):
            n = producers.get(t)
            if n is None or n.op_type != op or len(readers.get(n.output[0], [])) != 1:
                refuse(f"{probs} is not Cast(Softmax(Where(mask, Cast(scores), fill)))")
            ops.append(n)
            t = n.input[1] if op == "Where" else n.input[0]
        if t != scores_name or [a.i for a in ops[1].attribute if a.name == "axis"] not in ([-1], []):
            refuse(f"{probs} is not a softmax over the last axis of {scores_name}")
        return ops[::-1]
    n_layers = len([o for o in outputs if o.startswith("present.")]) // 2
    for i in range(n_layers):
        for kv, anchor in (("key", Anchors.k_new(i)), ("value", Anchors.v_new(i))):
            name, past = present_name(i, kv), past_name(i, kv)
            concat = producers.get(name)
            if name not in outputs or concat is None or concat.op_type != "Concat" or list(concat.input) != [past, anchor]:
                refuse(f"{name} is not Concat({past}, {anchor})")
            chain, t = [], name
            while True:  # the shape ops between the Concat and the MatMul that reads it
                users = readers.get(t, [])
                if len(users) != 1:
                    refuse(f"{t} has {len(users)} readers")
                node, j = users[0]
                if node.op_type == "MatMul" and j == 1:
                    matmul = node
                    break
                if node.op_type not in ("Transpose", "Unsqueeze") or j != 0:
                    refuse(f"{t} is read by a {node.op_type}")
                chain.append(node)
                t = node.output[0]
            out = matmul.output[0]
            nodes = []

            def branch(src: str, tag: str, transposes: bool = True) -> str:  # the chain's shape ops on one half
                for node in chain:
                    if node.op_type == "Transpose" and not transposes:
                        continue
                    nodes.append(helper.make_node(node.op_type, [src, *node.input[1:]], [f"{node.output[0]}.{tag}"],
                                                  name=f"{node.name}.{tag}"))
                    nodes[-1].attribute.extend(node.attribute)
                    src = nodes[-1].output[0]
                return src

            def summed(a: str, a_axis: str, b: str, axis: str, tag: str, back: bool = True) -> None:
                """ReduceSum(a' * b', axis) -> tag, summed in float (and cast back to the cache's type: ``back``)."""
                nodes.extend([
                    helper.make_node("Unsqueeze", [a, a_axis], [f"{tag}.a"], name=f"{tag}.a/node"),
                    helper.make_node("Unsqueeze", [b, "nr_m3"], [f"{tag}.b"], name=f"{tag}.b/node"),
                    helper.make_node("Mul", [f"{tag}.a", f"{tag}.b"], [f"{tag}.prod"], name=f"{tag}.prod/node"),
                    helper.make_node("Cast", [f"{tag}.prod"], [f"{tag}.prod_f"], to=onnx.TensorProto.FLOAT,
                                     name=f"{tag}.prod_f/node"),
                    helper.make_node("ReduceSum", [f"{tag}.prod_f", axis], [f"{tag}.sum" if back else tag],
                                     keepdims=0, name=f"{tag}.sum/node")])
                if back:
                    nodes.append(helper.make_node("Cast", [f"{tag}.sum"], [tag], to=elem[past], name=f"{tag}.cast/node"))

            def node(op: str, inputs: list[str], output: str, **attrs) -> str:
                nodes.append(helper.make_node(op, inputs, [output], name=f"{output}/node", **attrs))
                return output

            def past_len() -> str:  # P, the cached positions, read off the block's key cache
                return node("Gather", [node("Shape", [past_name(i, "key")], f"{name}.past_shape"), "nr_two"],
                            f"{name}.past_len", axis=0)

            old, new = branch(past, "past", transposes=past_form == "matmul"), branch(anchor, "new")
            reduced = past_form != "matmul"
            if kv == "key" and split:  # the two halves of the scores apart, in float (the exported Cast's type)
                q = matmul.input[0]
                summed(q, "nr_m2", old, "nr_last", f"{out}.past", back=False)
                node("Cast", [node("MatMul", [q, new], f"{out}.new")], f"{out}.new_f", to=onnx.TensorProto.FLOAT)
                scores[i] = out
            elif kv == "key":  # scores (..., S, P + S)
                q = matmul.input[0]
                if past_form == "matmul":
                    nodes.append(helper.make_node("MatMul", [q, old], [f"{out}.past"], name=f"{out}.past/node"))
                else:  # (..., S, 1, hd) * (..., 1, P, hd) summed over hd
                    summed(q, "nr_m2", old, "nr_last", f"{out}.past")
                nodes += [helper.make_node("MatMul", [q, new], [f"{out}.new"], name=f"{out}.new/node"),
                          helper.make_node("Concat", [f"{out}.past", f"{out}.new"], [out], axis=-1,
                                           name=f"{out}.concat/node")]
            elif split:  # softmax over (past, new) as two halves, no row of P + S: see the docstring
                softmax_ops = exported_softmax(matmul.input[0], scores[i])
                allowed, fill = softmax_ops[1].input[0], softmax_ops[1].input[2]
                k = f"{scores[i]}"
                if allowed not in mask_halves:  # sliced once, by the first block, for every block reading that mask
                    p_len = past_len()
                    mask_halves[allowed] = {
                        half: node("Slice", [allowed, start, end, "nr_last"], f"{allowed}.{half}_positions")
                        for half, (start, end) in (("past", ("nr_zero", p_len)), ("new", (p_len, "nr_end")))}
                halves = {half: node("Where", [mask_halves[allowed][half], f"{k}.{half}" if half == "past" else
                                               f"{k}.new_f", fill], f"{k}.masked_{half}") for half in ("past", "new")}
                top = node("Max", [node("ReduceMax", [halves[h]], f"{k}.max_{h}", axes=[-1], keepdims=1)
                                   for h in ("past", "new")], f"{k}.max")
                e = {h: node("Exp", [node("Sub", [halves[h], top], f"{k}.shifted_{h}")], f"{k}.exp_{h}")
                     for h in ("past", "new")}
                total = node("Add", [node("ReduceSum", [e[h], "nr_last"], f"{k}.sum_{h}", keepdims=1)
                                     for h in ("past", "new")], f"{k}.sum")
                e_h = {h: node("Cast", [e[h]], f"{k}.exp_{h}_h", to=elem[past]) for h in ("past", "new")}
                # (..., S, 1, P) * (..., 1, hd, P) summed over P, the contiguous axis; then the new rows' product
                summed(e_h["past"], "nr_m2", old, "nr_last", f"{out}.past", back=False)
                new_f = node("Cast", [node("MatMul", [e_h["new"], new], f"{out}.new")], f"{out}.new_f",
                             to=onnx.TensorProto.FLOAT)
                node("Cast", [node("Div", [node("Add", [f"{out}.past", new_f], f"{out}.unscaled"), total],
                                   f"{out}.scaled")], out, to=elem[past])
                for op in softmax_ops:
                    replaced[id(op)] = []
            else:  # probs (..., S, P + S) split at P
                probs, p_len = matmul.input[0], past_len()
                nodes += [helper.make_node("Slice", [probs, "nr_zero", p_len, "nr_last"], [f"{out}.probs_past"],
                                           name=f"{out}.probs_past/node"),
                          helper.make_node("Slice", [probs, p_len, "nr_end", "nr_last"], [f"{out}.probs_new"],
                                           name=f"{out}.probs_new/node")]
                if not reduced:
                    nodes.append(helper.make_node("MatMul", [f"{out}.probs_past", old], [f"{out}.past"],
                                                  name=f"{out}.past/node"))
                elif values_t:  # (..., S, 1, P) * (..., 1, hd, P) summed over P, the contiguous axis
                    summed(f"{out}.probs_past", "nr_m2", old, "nr_last", f"{out}.past")
                else:  # (..., S, P, 1) * (..., 1, P, hd) summed over P
                    summed(f"{out}.probs_past", "nr_last", old, "nr_m2", f"{out}.past")
                nodes += [helper.make_node("MatMul", [f"{out}.probs_new", new], [f"{out}.new"], name=f"{out}.new/node"),
                          helper.make_node("Add", [f"{out}.past", f"{out}.new"], [out], name=f"{out}.sum/node")]
            if values_t and kv == "value":  # (B, nkv, hd, S), as the cache holds them
                nodes.append(helper.make_node("Transpose", [anchor], [name], perm=[0, 1, 3, 2], name=f"{name}.new_rows"))
            else:
                nodes.append(helper.make_node("Identity", [anchor], [name], name=f"{name}.new_rows"))
            replaced.update({id(concat): [], **{id(c): [] for c in chain}, id(matmul): nodes})
            dims = outputs[name].type.tensor_type.shape.dim
            if values_t and kv == "value":
                dims[2].Clear()
                dims[2].dim_value = dims[3].dim_value
                dims[3].Clear()
                dims[3].dim_param = SEQ
            else:
                dims[2].Clear()
                dims[2].dim_param = SEQ
    kept = [m for n in g.node for m in replaced.get(id(n), [n])]
    del g.node[:]
    g.node.extend(kept)
    return model.SerializeToString()


class NetworkIndex:
    """One walk over a parsed network: its inputs, outputs and tensors by name, who produces and who reads
    each tensor; and the two rewrites the layouts make with it."""

    def __init__(self, network):
        self.network = network
        self.inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
        self.outputs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
        self.tensors, self.producers, self.consumers = {}, {}, {}
        for li in range(network.num_layers):
            layer = network.get_layer(li)
            for oi in range(layer.num_outputs):
                t = layer.get_output(oi)
                self.tensors[t.name], self.producers[t.name] = t, layer
            for j in range(layer.num_inputs):
                t = layer.get_input(j)
                if t is not None:
                    self.consumers.setdefault(t.name, []).append((layer, j))

    def redirect(self, old, new) -> None:
        """Every layer that read ``old`` when the index was made reads ``new`` instead."""
        for layer, j in self.consumers.get(old.name, []):
            layer.set_input(j, new)

    def replace_output(self, old, new, name: str) -> None:
        """``new`` becomes the network output ``name`` in place of ``old`` (whose readers move to ``new``)."""
        self.redirect(old, new)
        self.network.unmark_output(old)
        taken = {self.network.get_layer(li).get_output(o).name for li in range(self.network.num_layers)
                 for o in range(self.network.get_layer(li).num_outputs)}
        renamed, k = f"{name}.replaced", 0
        while renamed in taken:  # an output may be replaced twice (the LM head: its GEMM, then its folded norm)
            k += 1
            renamed = f"{name}.replaced.{k}"
        old.name = renamed
        new.name = name
        self.network.mark_output(new)

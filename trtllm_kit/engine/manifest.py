"""``engine.json``: everything a server needs to drive an engine without this toolkit, typed.

The JSON stays readable on its own (``engines/README.md`` documents every field).
"""

from __future__ import annotations

from typing import Literal

from trtllm_kit.engine.limits import EngineLimits, ProfileSpec
from trtllm_kit.engine.weights import WeightInputsRecord
from trtllm_kit.export.io_spec import TensorIO
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.utils.manifest import Manifest, Record


class BuildOptions(Record):
    """Everything that changes the engine; recorded in ``engine.json`` and used to decide reuse.

    Attributes:
        flavor: ``auto``, ``tensorrt`` or ``tensorrt-rtx``.
        kv_mode: ``auto`` or a KV layout name (``portable``, ``inplace``, ``plugin``).
        profiles: ``split`` (prefill + decode) or ``single``.
        limits: what the engine serves.
        opt_level: builder optimization level (0-5; None: TensorRT's default).
        workspace_gb: workspace memory limit in GB (None: TensorRT's default).
        timing_cache: a file reused and updated across builds (None: none).
        trt_include: TensorRT headers for compiling the KV-cache plugin (None: found automatically).
        weights: ``engine``: the weights live in the plan; ``inputs``: the weight matrices become engine
            inputs, stored beside it in ``weights.safetensors`` (``engine/weights.py``).
        gemm: who multiplies by the weight matrices: ``trt`` (TensorRT's MatrixMultiply layers), ``plugin`` (the
            toolkit's cuBLASLt ``TrtllmKitGemm`` plugin; needs ``kv_mode`` plugin and ``weights`` inputs) or
            ``auto`` (the plugin where it can be used, else ``trt``).
        norm: the RMSNorms: ``trt`` (the exported ops), ``plugin`` (one ``TrtllmKitRMSNorm`` layer each; needs
            ``kv_mode`` plugin or portable, and a flavour that loads the toolkit's plugins) or ``auto`` (the plugin
            with the plugin KV layout).
        rope: each block's rotary embedding of q and k: ``trt`` (the exported ops), ``plugin`` (one
            ``TrtllmKitRotary`` layer each; needs ``kv_mode`` plugin) or ``auto`` (the plugin with the plugin KV
            layout).
    """

    flavor: Literal["auto", "tensorrt", "tensorrt-rtx"] = "auto"
    kv_mode: Literal["auto", "portable", "portable-static", "inplace", "plugin"] = "auto"
    profiles: Literal["split", "single"] = "split"
    limits: EngineLimits
    opt_level: int | None = None
    workspace_gb: float | None = None
    timing_cache: str | None = None
    trt_include: str | None = None
    weights: Literal["engine", "inputs"] = "engine"
    gemm: Literal["auto", "trt", "plugin"] = "auto"
    norm: Literal["auto", "trt", "plugin"] = "auto"
    rope: Literal["auto", "trt", "plugin"] = "auto"

    def fingerprint(self) -> dict:
        """The options that change the engine's content as asked (the timing cache only speeds the build up;
        ``gemm``, ``norm`` and ``rope`` count by what they resolve to, ``EngineManifest.differences``)."""
        return self.model_dump(mode="json", exclude={"timing_cache", "trt_include", *PLUGIN_CHOICES})


class GpuRecord(Record):
    name: str
    compute_capability: str


class PluginRecord(Record):
    """The plugin library shipped beside the engine (load it before deserializing).

    Attributes:
        file, sha256: the library in the engine directory.
        source_sha256: of the CUDA sources compiled into it.
        name, version: the KV-cache attention plugin's creator (None in the portable KV layout, which loads the
            library for its RMSNorm plugin only).
        gemm: the GEMM plugin's creator (``TrtllmKitGemm``) when the engine uses it, else None.
        norm: the RMSNorm plugin's creator (``TrtllmKitRMSNorm``) when the engine uses it, else None.
        rope: the rotary plugin's creator (``TrtllmKitRotary``) when the engine uses it, else None.
        links: shared libraries it needs beyond TensorRT and the CUDA runtime, as found at build time
            (the GEMM plugin's ``libcublasLt.so.<major>``; the library's run path points there).
    """

    file: str
    sha256: str
    source_sha256: str
    name: str | None = None
    version: str | None = None
    gemm: str | None = None
    norm: str | None = None
    rope: str | None = None
    links: list[str] = []


# Version of the network rewrites that wire the toolkit's plugins in (kv_layouts.py): an engine with plugins built by
# another version is rebuilt, not reused. 1: before the plugins were pinned to the activations' type (on TensorRT
# 8.6 the norm and rotary plugins ran in float between reformats); 2: since (2026-11-30); 3: the GEMM plugin's weight
# inputs stored out x in (N, K) (2026-11-30, eighth session); 4: norms, SwiGLU and residual adds folded into the GEMM
# plugin, q/k/v split by the rotary plugin (folds.py, ninth session); 5: SwiGLU folded into the fused gate/up
# multiply's epilogue instead of the down multiply's prologue (tenth session); 6: the rotary embedding folded into the
# fused q/k/v multiply's epilogue (the GEMM plugin writes q, k and v; eleventh session).
PLUGIN_REWRITE = 6
PLUGIN_CHOICES = ("gemm", "norm", "rope")  # build options whose plugin choice an engine records in kv_layout.plugin


class KVLayoutRecord(Record):
    """How the cache tensors are laid out and driven (see ``engines/README.md``).

    Attributes:
        rewrite: the ``PLUGIN_REWRITE`` the engine was built with (1 in engine.json files from before the field).
    """

    name: str
    description: str
    static_cache: bool
    max_seq: int | None = None
    plugin: PluginRecord | None = None
    rewrite: int = 1


class ProfileRecord(Record):
    """One optimization profile: its axes' min/opt/max and every input's min/opt/max shape."""

    index: int
    name: str
    min: dict[str, int]
    opt: dict[str, int]
    max: dict[str, int]
    tensors: dict[str, dict[str, list[int]]]

    @classmethod
    def of(cls, index: int, p: ProfileSpec, ios: list[TensorIO]) -> "ProfileRecord":
        return cls(index=index, name=p.name, min=p.min, opt=p.opt, max=p.max,
                   tensors={io.name: dict(zip(("min", "opt", "max"), map(list, p.shapes(io)))) for io in ios})

    def spec(self) -> ProfileSpec:
        return ProfileSpec(self.name, self.min, self.opt, self.max)


class EngineIO(Record):
    """One engine I/O tensor as the engine declares it (-1 = dynamic)."""

    name: str
    mode: Literal["input", "output"]
    dtype: str
    shape: list[int]


class SourceRecord(Record):
    export_dir: str
    onnx_sha256: str
    weights_sha256: str | None
    model: str


class EngineManifest(Manifest):
    FILE = "engine.json"
    FORMAT = "trtllm-kit-engine/2"
    WHAT = "an engine directory"
    REDO = "build it again with `trtllm-kit build ONNX_DIR`"
    MAKE = "build one from an export directory with `trtllm-kit build ONNX_DIR`"

    format: str = FORMAT
    toolkit_version: str
    flavor: Literal["tensorrt", "tensorrt-rtx"]
    trt_version: str
    gpu: GpuRecord | None
    built_without_gpu: bool
    dtype: Literal["fp16", "bf16", "fp32"]
    precision: str
    kv_layout: KVLayoutRecord
    last_only_logits: bool
    build: BuildOptions
    profiles: list[ProfileRecord]
    io: list[EngineIO]
    io_source: str
    source: SourceRecord
    spec: ModelSpec
    builder_settings: dict[str, bool | int | str] = {}
    timing_cache_note: str | None = None
    build_seconds: float
    build_phases: dict[str, float] = {}
    engine_bytes: int
    engine_sha256: str
    layers_file: str | None = None
    weight_inputs: WeightInputsRecord | None = None
    host_code_embedded: bool = False
    created: str

    @classmethod
    def load_engine_dir(cls, directory) -> "EngineManifest":
        """``load`` plus a check that ``model.engine`` (and ``weights.safetensors`` where the weights are inputs)
        is there with the size the manifest records.

        Raises:
            ToolkitError: see ``load``; a missing or truncated ``model.engine`` or weights file; ``directory``
                naming the manifest file itself (give its directory).
        """
        from pathlib import Path

        from trtllm_kit.errors import ToolkitError

        if Path(directory).is_file() and Path(directory).name == cls.FILE:
            raise ToolkitError(f"{directory} is a file of {cls.WHAT}; give its directory", f"use {Path(directory).parent}")
        m = cls.load(directory)
        path = Path(directory) / "model.engine"
        if not path.is_file():
            raise ToolkitError(f"{directory} has no model.engine", cls.REDO)
        if path.stat().st_size != m.engine_bytes:
            raise ToolkitError(f"{path} is {path.stat().st_size} bytes, engine.json says {m.engine_bytes}", cls.REDO)
        if m.weight_inputs is not None:
            m.weight_inputs.check_file(directory)
        return m

    def answers(self, options: BuildOptions, flavor_name: str, trt_version: str, onnx_sha256: str,
                weights_sha256: str | None) -> bool:
        """Whether this engine is what a build with these inputs would make (the reuse fingerprint)."""
        return not self.differences(options, flavor_name, trt_version, onnx_sha256, weights_sha256)

    def differences(self, options: BuildOptions, flavor_name: str, trt_version: str, onnx_sha256: str,
                    weights_sha256: str | None) -> list[str]:
        """What a build with these inputs would make differently from this engine, one phrase each (e.g.
        ``"kv_mode portable -> plugin"``, ``"limits.max_batch 256 -> 16"``, ``"the export changed"``); empty when
        the engine can be reused. ``--gemm``/``--norm``/``--rope`` count by what they resolve to: ``trt`` and an
        ``auto`` that means ``trt`` agree. An engine with plugins also differs when the plugin sources changed
        (``"the plugin sources changed"``) or its network rewrite is another ``PLUGIN_REWRITE``.

        Args:
            options: the build options a build would use now.
            flavor_name, trt_version: the TensorRT a build would use now.
            onnx_sha256, weights_sha256: of the export it would build from.
        """
        want = options.model_copy(update={"limits": options.limits.checked()})

        def flat(d: dict, prefix: str = "") -> dict:  # limits.max_batch, not the whole limits dict
            return {k: v for key, x in d.items()
                    for k, v in (flat(x, f"{prefix}{key}.").items() if isinstance(x, dict) else [(prefix + key, x)])}

        have, new = flat(self.build.fingerprint()), flat(want.fingerprint())
        out = [f"{k} {have.get(k)} -> {new.get(k)}" for k in sorted(set(have) | set(new)) if have.get(k) != new.get(k)]
        if (self.flavor, self.trt_version) != (flavor_name, trt_version):
            out.append(f"{self.flavor} {self.trt_version} -> {flavor_name} {trt_version}")
        if (self.source.onnx_sha256, self.source.weights_sha256) != (onnx_sha256, weights_sha256):
            out.append("the export changed")
        if out:  # the plugin choices below are only meaningful for the same layout
            return out
        for what in PLUGIN_CHOICES:
            used, wanted = self.plugin_used(what), self._wanted(what, want)
            if used != wanted:
                out.append(f"{what} {used} -> {wanted}")
        if self.weight_inputs is not None and not out:  # the weights' fusion and layout follow the GEMM choice
            from trtllm_kit.engine.weights import weight_input_choices

            out += [f"weight_{k} {a} -> {b}" for k, a, b in
                    zip(("fusion", "layout"), self.weight_choices(), weight_input_choices(self.plugin_used("gemm")))
                    if a != b]
        if self.plugin_used("gemm") == "plugin" and not out:  # the small ops folded into the plugins, or not
            from trtllm_kit.engine.folds import fold_choice

            used, wanted = str(self.builder_settings.get("op_folding", "off")), fold_choice("plugin")
            if used != wanted:
                out.append(f"op_folding {used} -> {wanted}")
            elif used == "on":
                from trtllm_kit.engine.folds import scale_choice

                used, wanted = str(self.builder_settings.get("norm_scale_in_weights", "off")), scale_choice()
                if used != wanted:
                    out.append(f"norm_scale_in_weights {used} -> {wanted}")
        if self.kv_layout.name == "portable-static" and not out:  # how its attention reads the cache
            from trtllm_kit.engine.kv_layouts import past_attention

            used, wanted = str(self.builder_settings.get("past_attention", "matmul")), past_attention()
            if used != wanted:
                out.append(f"past_attention {used} -> {wanted}")
        plugin = self.kv_layout.plugin
        if plugin is not None:  # the same choices, built from other plugin code or by another rewrite
            from trtllm_kit.engine.plugin import source_sha256

            # (a library compiled with the GEMM plugin may ship with an engine that ended up not using it)
            if plugin.source_sha256 not in {source_sha256(gemm=plugin.gemm is not None), source_sha256(gemm=True)}:
                out.append("the plugin sources changed")
            if self.kv_layout.rewrite != PLUGIN_REWRITE:
                out.append(f"plugin rewrite {self.kv_layout.rewrite} -> {PLUGIN_REWRITE}")
        return out

    @property
    def values_transposed(self) -> bool:
        """Whether the engine's value caches are (B, kv_heads, head_dim, positions) (portable-static in the
        ``split-vt`` form, its default, or ``reduce-vt``)."""
        from trtllm_kit.engine.weights import VALUES_TRANSPOSED

        return self.builder_settings.get("past_attention") in VALUES_TRANSPOSED

    def weight_choices(self) -> tuple[str, str]:
        """(fusion, layout) of the weight inputs as built (``weight_input_choices``); engines from before these
        were recorded: fused when ``fused_weight_groups`` > 0, and stored in x out."""
        bs = self.builder_settings
        fusion = bs.get("weight_fusion") or ("on" if bs.get("fused_weight_groups") else "off")
        return str(fusion), str(bs.get("weight_layout", "in_x_out"))

    def plugin_used(self, what: str) -> str:
        """``"plugin"`` when the engine's ``what`` (``"gemm"``: the weight multiplies, ``"norm"``: the RMSNorms,
        ``"rope"``: the rotary) is the toolkit's plugin (named in ``kv_layout.plugin``), else ``"trt"`` (also for
        engines from before that plugin, which record no choice)."""
        plugin = self.kv_layout.plugin
        return "plugin" if plugin is not None and getattr(plugin, what) else "trt"

    @property
    def gemm_used(self) -> str:
        return self.plugin_used("gemm")

    @property
    def norm_used(self) -> str:
        return self.plugin_used("norm")

    @property
    def rope_used(self) -> str:
        return self.plugin_used("rope")

    def _wanted(self, what: str, options: BuildOptions) -> str:
        """What a build with ``options`` would use for ``what`` here now (an ``auto`` resolved for this engine's
        layout, as the builder resolves it: ``--gemm auto`` also depends on cuBLASLt)."""
        if getattr(options, what) != "auto":
            return getattr(options, what)
        from trtllm_kit.engine.gemm import resolve_gemm
        from trtllm_kit.engine.kv_layouts import resolve_norm, resolve_rope

        resolve = {"gemm": resolve_gemm, "norm": resolve_norm, "rope": resolve_rope}[what]
        return resolve(options, self.kv_layout.name, notes=[])

    @property
    def limits(self) -> EngineLimits:
        return self.build.limits

    def profile_specs(self) -> list[ProfileSpec]:
        return [p.spec() for p in self.profiles]

    def io_dtype(self, name: str) -> str:
        return next(t.dtype for t in self.io if t.name == name)

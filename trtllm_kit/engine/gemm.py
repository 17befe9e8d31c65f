"""Who multiplies by the weight matrices: TensorRT's own MatrixMultiply layers or the toolkit's cuBLASLt GEMM
plugin (``TrtllmKitGemm``, ``plugin/gemm.cu``), chosen by ``--gemm``; and the network rewrite that swaps them.

Why a plugin: TensorRT 8.6 builds the plugin KV layout at optimization level 0, where every MatrixMultiply runs
the first kernel that works (H200, llama-7b at batch 16: 0.37 ms per 4096x11008 weight); with the plugin the
7B engines ran 2.1-3.4x eager at every batch (``docs/benchmarks/h200-trt86/README.md``, fifth session).
"""

from __future__ import annotations

import logging

from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex
from trtllm_kit.errors import ToolkitError

log = logging.getLogger(__name__)


# The fix each conflict names (``check_plugin_options`` before the layout is chosen, ``resolve_norm``/``resolve_rope``
# once it is), in flag words; recipes word the same rule with their keys (``RecipeEngine``).
CONFLICT_HINTS = {"gemm": "use --kv-mode plugin or portable-static with --weights inputs, or --gemm auto or trt",
                  "norm": "use --kv-mode plugin, portable or portable-static, or --norm auto or trt",
                  "rope": "use --kv-mode plugin or portable-static, or --rope auto or trt"}


def norm_option_conflict(norm: str, kv_mode: str) -> str | None:
    """Why ``--norm norm`` cannot be used with ``--kv-mode kv_mode`` (None when it can, or for auto/trt): the
    RMSNorm plugin ships in the toolkit's plugin library, which the plugin and portable KV layouts load (in the
    portable layouts it also cuts TensorRT 8.6's whole-graph Myelin region at every norm). Used by
    ``resolve_norm`` and ``plugin_option_conflicts``."""
    if norm == "plugin" and kv_mode not in ("plugin", "portable", "portable-static"):
        return (f"it ships in the toolkit's plugin library (--kv-mode plugin, portable or portable-static), not with "
                f"--kv-mode {kv_mode}")
    return None


def rope_option_conflict(rope: str, kv_mode: str) -> str | None:
    """Why ``--rope rope`` cannot be used with ``--kv-mode kv_mode`` (None when it can, or for auto/trt): the
    rotary plugin ships in the plugin library and writes q and k in the layout the attention reads, which the plugin
    and portable-static KV layouts rewire (the portable layout keeps the exported graph)."""
    if rope == "plugin" and kv_mode not in ("plugin", "portable-static"):
        return f"it feeds the attention of --kv-mode plugin or portable-static, not --kv-mode {kv_mode}"
    return None


def gemm_option_conflict(gemm: str, kv_mode: str, weights: str) -> str | None:
    """Why ``gemm`` cannot be used with these options, known before any work (None when it can, or for auto/trt).

    Used by ``plugin_option_conflicts`` (before the KV layout is chosen) and ``resolve_gemm``; names the options
    as ``--flag value``.
    """
    if gemm != "plugin":
        return None
    if kv_mode not in ("plugin", "portable-static"):
        return (f"it ships in the toolkit's plugin library (--kv-mode plugin or portable-static), not with "
                f"--kv-mode {kv_mode}")
    if weights != "inputs":
        return "it reads the weight matrices as engine inputs (--weights inputs), not with --weights engine"
    return None


def plugin_option_conflicts(gemm: str, norm: str, kv_mode: str, weights: str, rope: str = "trt") -> dict[str, str]:
    """The plugin options that can never work with these, known before any work: {"gemm"/"norm"/"rope": why}.
    ``kv_mode`` auto counts as plugin (it may choose that layout: TensorRT 8.6 with nvcc). The one rule behind the
    builder's early check (``check_plugin_options``) and the recipe schema (``RecipeEngine``), which word it apart."""
    kv_mode = "plugin" if kv_mode == "auto" else kv_mode
    found = {"gemm": gemm_option_conflict(gemm, kv_mode, weights), "norm": norm_option_conflict(norm, kv_mode),
             "rope": rope_option_conflict(rope, kv_mode)}
    return {option: why for option, why in found.items() if why}


def resolve_gemm(options, layout_name: str, notes: list[str] | None = None, flavor=None) -> str:
    """Who multiplies by the weight matrices: ``"plugin"`` (``TrtllmKitGemm``, cuBLASLt) or ``"trt"``.

    ``--gemm auto`` takes the plugin where it can be used (the plugin or portable-static KV layout, whose library
    it joins; the weights as engine inputs, which it reads; cuBLASLt found), else TensorRT's layers, logging why.

    Args:
        options: the build options (``gemm``, ``weights``).
        layout_name: the KV layout the build uses.
        notes: where the choice goes instead of the log (as ``resolve_kv_layout``'s).
        flavor: the TensorRT flavour; with it, the plugin library is checked to be compilable and loadable here in
            the portable-static layout (the plugin layout is only chosen where it is).

    Raises:
        ToolkitError: ``--gemm plugin`` where it cannot be used (one line naming what is missing).
    """
    if options.gemm == "trt":
        return "trt"
    reason = gemm_option_conflict("plugin", layout_name, "inputs")  # the layout, then whether the library loads here
    if reason is None and layout_name != "plugin" and flavor is not None:
        from trtllm_kit.engine.kv_layouts import plugin_library_unavailable

        reason = plugin_library_unavailable(flavor, options)
    reason = reason or gemm_option_conflict("plugin", layout_name, options.weights)
    if reason is None:
        from trtllm_kit.engine.plugin import PluginUnavailable, find_cublaslt

        try:
            find_cublaslt()
        except PluginUnavailable as e:
            reason = e.message
    say = notes.append if notes is not None else log.info
    if reason is None:
        say(f"GEMM: TrtllmKitGemm plugin (cuBLASLt) (--gemm {options.gemm})")
        return "plugin"
    if options.gemm == "plugin":
        raise ToolkitError(f"--gemm plugin: {reason}",
                           "use --gemm trt (TensorRT's own matrix multiplies) or --gemm auto")
    say(f"GEMM: TensorRT's matrix multiplies (--gemm auto; not the plugin: {reason})")
    return "trt"


def rewire_gemms(ctx: NetworkContext, weight_names: set[str], made: list | None = None) -> int:
    """Every multiply ``matmuls_by_weight`` finds becomes a ``TrtllmKitGemm`` layer reading the weight input as
    it is bound (no cast, no copy; an input stored out x in, ``weights_to_inputs(out_x_in=True)``, with the plugin's
    ``w_layout`` 1); its readers (or the network output) move to the plugin's output.

    Args:
        made: where to append ``(plugin layer, w_layout)`` for each (``folds.fold_into_gemms`` reads them).

    Returns:
        How many multiplies were rewired.
    """
    from trtllm_kit.engine import plugin as P

    trt, network = ctx.trt, ctx.network
    index = NetworkIndex(network)
    found = matmuls_by_weight(trt, network, weight_names, index)
    for layer, w, w_layout in found:
        x = layer.get_input(0)  # read now: an earlier rewire may have redirected it (chained multiplies: x @ A @ B)
        old = layer.get_output(0)
        gemm = P.add_gemm(trt, network, x, w, name=f"gemm.{layer.name}", w_layout=w_layout)
        pin_to_weight_type(ctx, gemm, w)
        if made is not None:
            made.append((gemm, w_layout))
        if not replace_network_output(ctx, index, old, gemm.get_output(0)):
            index.redirect(old, gemm.get_output(0))
    return len(found)


def pin_to_weight_type(ctx: NetworkContext, gemm, w) -> None:
    """TensorRT 8.6 (no strong typing): run a ``TrtllmKitGemm`` layer and its output in the weight's type, so the
    bound weights are read as they are; a no-op for strongly typed networks."""
    if not ctx.strongly_typed:
        gemm.precision = w.dtype
        for o in range(gemm.num_outputs):  # (q, k and v with the rotary epilogue)
            gemm.set_output_type(o, w.dtype)
        ctx.precision_constraints = True


def replace_network_output(ctx: NetworkContext, index: NetworkIndex, old, new) -> bool:
    """When ``old`` is a network output, ``new`` takes its place, name and (8.6) type, and True; else False."""
    if old.name not in index.outputs:
        return False
    dtype = old.dtype
    index.replace_output(old, new, old.name)
    if not ctx.strongly_typed:
        new.dtype = dtype
    return True


def matmuls_by_weight(trt, network, weight_names: set[str], index: "NetworkIndex | None" = None) -> list[tuple]:
    """The MatrixMultiply layers of an activation (input 0) by a weight input: ``(layer, w, w_layout)`` with ``w``
    the network input named in ``weight_names``: (K, N) with ``w_layout`` 0, or (N, K) seen through one transpose
    with ``w_layout`` 1 (``weights_to_inputs(out_x_in=True)`` stores them so).

    A weight counts when the multiply's second operand (no transpose flags) is such an input seen through
    layers that keep its values: a Cast or Identity (TensorRT 8.6 widens fp16 initializers to fp32, so
    ``weights_to_inputs`` casts the fp16 input back), a Shuffle that only adds leading 1s (the parser's
    broadcast to the activation's rank) and at most one transpose that ``weights_to_inputs`` inserted (named
    ``<input>.in_x_out``; the exporter's own, e.g. a tied LM head's ``Transpose(embed_tokens)``, is not taken: that
    path has not run on a GPU).
    """
    index = index or NetworkIndex(network)

    def weight_input(t):
        transposed = 0
        for _ in range(6):
            if t.name in index.inputs:
                return (t, transposed) if t.name in weight_names and len(t.shape) == 2 else None
            layer = index.producers.get(t.name)
            if layer is None:
                return None
            if layer.type == trt.LayerType.SHUFFLE and not transposed and _transposes_a_matrix(trt, layer):
                transposed = 1
            elif not keeps_values(trt, layer):
                return None
            t = layer.get_input(0)
        return None

    found = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.MATRIX_MULTIPLY:
            continue
        layer.__class__ = trt.IMatrixMultiplyLayer
        if layer.op0 != trt.MatrixOperation.NONE or layer.op1 != trt.MatrixOperation.NONE:
            continue
        w = weight_input(layer.get_input(1))
        if w is not None:
            found.append((layer, *w))
    return found


def keeps_values(trt, layer) -> bool:
    """A layer between a weight and its multiply that hands the weight on unchanged for the GEMM rewrite: a Cast or
    Identity (TensorRT 8.6 widens fp16 initializers), or a Shuffle that only adds leading 1s (the parser's broadcast
    to the activation's rank). Used walking back from a multiply (``matmuls_by_weight``) and forward from a weight
    (``weights._matmul_reading``)."""
    if layer.type in {getattr(trt.LayerType, n) for n in ("CAST", "IDENTITY") if hasattr(trt.LayerType, n)}:
        return True
    return layer.type == trt.LayerType.SHUFFLE and _adds_leading_ones(trt, layer)


def _transposes_a_matrix(trt, layer) -> bool:
    """``weights_to_inputs``' out-x-in view: a Shuffle named ``<input>.in_x_out`` whose output is its 2-D input
    transposed, nothing else."""
    if not layer.name.endswith(".in_x_out"):
        return False
    layer.__class__ = trt.IShuffleLayer
    src, dst = tuple(layer.get_input(0).shape), tuple(layer.get_output(0).shape)
    perm1, perm2 = layer.first_transpose, layer.second_transpose
    return (layer.num_inputs == 1 and len(src) == 2 and -1 not in src and dst == src[::-1]
            and (perm1[0], perm1[1]) == (1, 0) and (perm2[0], perm2[1]) == (0, 1))


def _adds_leading_ones(trt, layer) -> bool:
    """A Shuffle whose output is its input with only leading 1s added (no transpose): same bytes, same order."""
    layer.__class__ = trt.IShuffleLayer
    src, dst = tuple(layer.get_input(0).shape), tuple(layer.get_output(0).shape)
    rank_in, rank_out = len(src), len(dst)
    identity = all(tuple(p[i] for i in range(n)) == tuple(range(n))
                   for p, n in ((layer.first_transpose, rank_in), (layer.second_transpose, rank_out)))
    return (identity and rank_out >= rank_in and -1 not in src and dst[rank_out - rank_in:] == src
            and all(d == 1 for d in dst[:rank_out - rank_in]))

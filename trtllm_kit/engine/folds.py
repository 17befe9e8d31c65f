"""The small ops between the weight multiplies, folded into the plugins beside them (plugin KV layout, GEMM plugin).

At batch-1 decode a llama-7b step ran 0.8 ms of its 4.2 outside the multiplies (H200, TensorRT 8.6, eighth session),
about 10 small kernels per block at 2-5 us each: two RMSNorms, two residual adds, SwiGLU's product, the q/k slices of
the fused q/k/v multiply and v's transpose. After the GEMM rewrite (``gemm.rewire_gemms``) this pass makes:

- an RMSNorm plugin layer read only by multiplies: each multiply's prologue (``prologue="rms_norm"``), or, where the
  multiply's weight is an engine input read by it alone (``ctx.weight_arrays``) and the scale a constant, the scale
  multiplied into that weight's K axis (``"rms_norm_folded"``: the GEMV then sums mean(x^2) as it goes instead of a
  pass over x first; llama-7b's multiplies 3.37 against 3.53 ms a step, H200, ``scripts/h200/decode_step_probe.cu``;
  ``TRTLLM_KIT_SCALE_IN_WEIGHTS=0`` keeps the scale an input);
- ``down(T(silu(gate)) * up)`` with gate and up the two halves of one fused multiply's output: that multiply's
  epilogue (``swiglu=True``: it writes ``silu(gate) * up``, half as wide), read by the down multiply as x; where the
  SwiGLU ops or the fused output have other readers, the down multiply's prologue (``"swiglu"``, reading the fused
  output whole) instead. As the down multiply's prologue each batch-1 GEMV block recomputed SwiGLU over all of its
  inputs: llama-7b's multiplies took 3.79 ms a step against 3.42 as the gate/up epilogue (H200,
  ``scripts/h200/decode_step_probe.cu``);
- a multiply whose only reader is the block's residual add (``Anchors.attn_res``/``mlp_res``): its epilogue;
- the rotary plugin reading the fused q/k/v output's q and k slices, and the attention plugin its v (slice,
  reshape, transpose): one rotary layer reading the fused output whole and writing q, k and v (``fused_qkv``);
- that rotary layer, where it is the fused multiply's only reader and head_dim a multiple of 8: the multiply's
  epilogue (``rope=``: the GEMM plugin writes q, k and v; its batch-1 GEMV rotates each head's row pairs in shared
  memory). The rotary kernel between the multiply and attention cost llama-7b's batch-1 step 0.016-0.023 ms (H200,
  3.527 against 3.543 ms at 76 cached tokens, ``scripts/h200/decode_step_probe.cu``, eleventh session).

The replaced layers are left unread (TensorRT drops them). ``TRTLLM_KIT_FOLD=0`` builds without this pass (an A/B
knob, recorded as ``builder_settings.op_folding``).
"""

from __future__ import annotations

from typing import NamedTuple

from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, pin_to_activations
from trtllm_kit.export.io_spec import Anchors


def fold_choice(gemm: str) -> str:
    """Whether a build folds the small ops into the plugins (``"on"``/``"off"``): on with the GEMM plugin unless
    ``TRTLLM_KIT_FOLD=0``.

    Raises:
        ToolkitError: an A/B knob holds a value it does not know (``weights.check_knobs``).
    """
    from trtllm_kit.engine.weights import FOLD_ENV, knob

    return knob(FOLD_ENV, "on") if gemm == "plugin" else "off"


class _Rewrite:
    """New tensors standing for old ones: the readers the index knew move at once (``NetworkIndex.redirect``); the
    layers this pass adds read through ``current`` and are re-pointed by ``settle`` (a later fold may replace what an
    earlier one read: the fused multiplies come last in the network's layer order)."""

    def __init__(self, ctx: NetworkContext):
        self.ctx = ctx
        self.index = NetworkIndex(ctx.network)
        self.new: dict[str, object] = {}  # old tensor name -> new tensor
        self.added: list = []
        self.live = self._live()

    def _live(self) -> set[str]:
        """Names of the layers an output depends on (the rewrites before this one leave replaced layers in the
        network, still reading their inputs, but unread)."""
        index, live = self.index, set()
        stack = list(index.outputs.values())
        while stack:
            layer = index.producers.get(stack.pop().name)
            if layer is None or layer.name in live:
                continue
            live.add(layer.name)
            stack += [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]
        return live

    def readers(self, t) -> list:
        """The live layers that read ``t`` when the pass began: ``[(layer, input index)]``."""
        return [(r, j) for r, j in self.index.consumers.get(t.name, []) if r.name in self.live]

    def current(self, t):
        while t is not None and t.name in self.new:
            t = self.new[t.name]
        return t

    def replace(self, old, new) -> None:
        from trtllm_kit.engine.gemm import replace_network_output

        if not replace_network_output(self.ctx, self.index, old, new):
            self.index.redirect(old, new)
        self.new[old.name] = new  # (an output's old tensor is renamed: layers added before read it by that name)

    def settle(self) -> None:
        for layer in self.added:
            for j in range(layer.num_inputs):
                t = layer.get_input(j)
                cur = self.current(t)
                if cur is not t:
                    layer.set_input(j, cur)


def fold_into_gemms(ctx: NetworkContext, gemms: list[tuple], made: "dict | None" = None) -> dict[str, int]:
    """Fold norms, SwiGLU products and residual adds into the GEMM plugin layers ``gemms`` (``(layer, w_layout)``
    from ``gemm.rewire_gemms``): each that has something to fold is replaced by one layer with its prologue and
    epilogue (``plugin.add_gemm``), the others stay as they are.

    What folds: an RMSNorm plugin layer (``rms_norm.*``, ``kv_layouts.rewire_norms``) whose every live reader is one
    of ``gemms`` (as x); SwiGLU over the two halves of one fused gate/up multiply (``_swiglu_chain``): into that
    multiply's epilogue where the SwiGLU ops and the fused output have no other readers, else into the down
    multiply's prologue; a block's residual add (``Anchors.attn_res``/``mlp_res``, a sum of two tensors of one shape)
    that is the multiply's only reader (so not past a bias add).

    Args:
        made: where to record, for every GEMM plugin layer the network then has (``gemms`` left as they were and the
            ones added), what its inputs after x and w are: ``{"w_layout", "prologue", "eps", "epilogue"}``
            (``"none"``, ``"residual"`` or ``"swiglu"``) by layer name (``fold_rope_into_gemms`` remakes a layer with
            the rotary epilogue from its inputs); None: not recorded.

    Returns:
        How many of each were folded: ``{"rms_norm": n, "swiglu": n, "residual": n, "norm_scale_in_weights": n}``
        (the last: the RMSNorms among ``rms_norm`` whose scale went into the weight).

    Raises:
        PluginUnavailable: the GEMM plugin is not loaded.
        ToolkitError: the plugin rejected the fields (a negative eps).
    """
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.gemm import pin_to_weight_type

    trt, network = ctx.trt, ctx.network
    rw = _Rewrite(ctx)
    index = rw.index
    names = {layer.name for layer, _ in gemms}
    residual_names = {a for i in range(ctx.spec.num_layers) for a in (Anchors.attn_res(i), Anchors.mlp_res(i))}
    counts = {"rms_norm": 0, "swiglu": 0, "residual": 0, "norm_scale_in_weights": 0}
    arrays = ctx.weight_arrays if scale_choice() == "on" else {}
    # SwiGLU into the gate/up multiply's epilogue: that layer's name -> the tensor its new output stands for (the
    # down multiply's x); else into the down multiply's prologue: the down layer's name -> its SwiGLU chain
    swiglu_after: dict[str, object] = {}
    chains: dict[str, _SwiGlu] = {}
    for layer, w_layout in gemms:
        chain = _swiglu_chain(trt, index, layer.get_input(0), layer.get_input(1), w_layout)
        if chain is None:
            continue
        producer = index.producers.get(chain.whole.name)
        if producer is not None and producer.name in names and _only_swiglu_reads(trt, rw, chain, layer):
            swiglu_after[producer.name] = chain.x
        else:
            chains[layer.name] = chain
    for layer, w_layout in gemms:
        x, w = rw.current(layer.get_input(0)), layer.get_input(1)
        prologue, scale = "none", None
        norm = index.producers.get(x.name)
        if (norm is not None and norm.name.startswith("rms_norm.") and norm.num_inputs == 2
                and x.name not in index.outputs and all(r.name in names and j == 0 for r, j in rw.readers(x))):
            prologue, x, scale = "rms_norm", rw.current(norm.get_input(0)), norm.get_input(1)
            if _scale_into_weight(trt, rw, arrays, layer, w, w_layout, scale):
                prologue, scale = "rms_norm_folded", None
                counts["norm_scale_in_weights"] += 1
        elif layer.name in chains:  # SwiGLU as the down multiply's prologue, reading [gate | up] whole
            prologue, x = "swiglu", rw.current(chains[layer.name].whole)
        out = layer.get_output(0)
        readers = rw.readers(out)
        add, residual = None, None
        swiglu = layer.name in swiglu_after
        if swiglu:
            out = swiglu_after[layer.name]  # the new output is silu(gate) * up
        elif out.name not in index.outputs and len(readers) == 1:
            r, j = readers[0]
            if r.type == trt.LayerType.ELEMENTWISE and r.get_output(0).name in residual_names:
                r.__class__ = trt.IElementWiseLayer
                other = rw.current(r.get_input(1 - j))
                if r.op == trt.ElementWiseOperation.SUM and _same_shape(other, out):  # no broadcast in the plugin
                    add, residual = r, other
        if prologue == "none" and add is None and not swiglu:
            if made is not None:
                made[layer.name] = dict(w_layout=w_layout, prologue="none", eps=0.0, epilogue="none")
            continue
        new = P.add_gemm(trt, network, x, w, name=f"{layer.name}.folded", w_layout=w_layout, prologue=prologue,
                         scale=scale, eps=ctx.spec.rms_norm_eps, residual=residual, swiglu=swiglu)
        if made is not None:
            made[new.name] = dict(w_layout=w_layout, prologue=prologue, eps=ctx.spec.rms_norm_eps,
                                  epilogue="swiglu" if swiglu else "residual" if add is not None else "none")
        pin_to_weight_type(ctx, new, w)
        rw.added.append(new)
        rw.replace(add.get_output(0) if add is not None else out, new.get_output(0))
        if prologue != "none":
            counts["rms_norm" if prologue == "rms_norm_folded" else prologue] += 1
        counts["swiglu"] += swiglu
        counts["residual"] += add is not None
    rw.settle()
    return counts


def scale_choice() -> str:
    """Whether the fold pass multiplies an RMSNorm's scale into the weights after it (``"on"``/``"off"``): on unless
    ``TRTLLM_KIT_SCALE_IN_WEIGHTS=0``.

    Raises:
        ToolkitError: an A/B knob holds a value it does not know (``weights.check_knobs``).
    """
    from trtllm_kit.engine.weights import SCALE_ENV, knob

    return knob(SCALE_ENV, "on")


def _constant_values(trt, index, t):
    """The values of ``t`` (a float32 copy, flat) where it is a constant, possibly through identities, casts and
    reshapes; else None. (A copy: a deferred multiply reads it after the network may be gone.)"""
    import numpy as np

    passes = {trt.LayerType.IDENTITY, trt.LayerType.SHUFFLE} | (
        {trt.LayerType.CAST} if hasattr(trt.LayerType, "CAST") else set())
    for _ in range(8):
        layer = index.producers.get(t.name)
        if layer is None:
            return None
        kind = trt.ILayer.type.__get__(layer)
        if kind == trt.LayerType.CONSTANT:
            layer.__class__ = trt.IConstantLayer
            w = layer.weights
            return np.array(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float32).reshape(-1)
        if kind not in passes or layer.num_inputs != 1:
            return None
        t = layer.get_input(0)
    return None


def _scale_into_weight(trt, rw: _Rewrite, arrays: dict, layer, w, w_layout: int, scale) -> bool:
    """Multiply the RMSNorm scale ``scale`` into the K axis of weight input ``w`` (``arrays[w.name]``, stored as the
    engine's input) where that is safe: ``w`` is read by ``layer`` alone among the live layers (not, say, by an
    embedding lookup sharing the LM head's table; the multiply the GEMM rewrite replaced still reads it, unread
    itself) and the scale is a constant of K values. Returns whether it did.

    The multiply is deferred (``weight_file.Deferred.then``): made when the weights file is written, beside
    TensorRT's build, on a copy where the value is a view of the export's bytes."""
    from trtllm_kit.engine.weight_file import Deferred

    a = arrays.get(w.name)
    if a is None or [r.name for r, _ in rw.readers(w)] != [layer.name]:
        return False
    g = _constant_values(trt, rw.index, scale)
    k_axis = 1 if w_layout == 1 else 0
    if g is None or len(a.shape) != 2 or g.size != a.shape[k_axis]:
        return False
    arrays[w.name] = Deferred.of(a).then(lambda v: _scale_axis(v, g, k_axis))
    return True


def _scale_axis(a, g, axis: int, rows: int = 1024) -> None:
    """``a *= g`` along ``axis`` of the 2-D array ``a``, in place: each product in float32, rounded once to ``a``'s
    type, a block of rows at a time (torch's CPU threads; a 7B model's multiplies took numpy about a minute)."""
    import numpy as np
    import torch

    t = torch.from_numpy(a)
    scale = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32))
    scale = scale.view(1, -1) if axis == 1 else scale.view(-1, 1)
    for i in range(0, t.shape[0], rows):
        block = t[i:i + rows]
        block.copy_(block.float() * (scale if axis == 1 else scale[i:i + rows]))


def _same_shape(a, b) -> bool:
    """Whether two tensors have one shape as far as the network knows (dynamic axes: both dynamic)."""
    try:
        return tuple(a.shape) == tuple(b.shape)
    except RuntimeError:  # TensorRT could not say
        return False


def _last_axis(t) -> int | None:
    """The length of ``t``'s last axis where the network knows it (None when dynamic or unknown)."""
    try:
        n = t.shape[-1]
    except RuntimeError:  # TensorRT could not say
        return None
    return n if n >= 0 else None


def _slice_of(trt, index, t, name_suffix: str):
    """(sliced tensor, start of the last axis) when ``t`` is one output slice of a fused multiply (``fused.slice.``
    + a weight name ending in ``name_suffix``), else None."""
    layer = index.producers.get(t.name)
    if layer is None or layer.type != trt.LayerType.SLICE or not layer.name.startswith("fused.slice."):
        return None
    if not layer.name.endswith(name_suffix):
        return None
    layer.__class__ = trt.ISliceLayer
    start = tuple(layer.start)
    if any(start[:-1]) or len(tuple(layer.stride)) != len(start) or any(s != 1 for s in layer.stride):
        return None
    return layer.get_input(0), start[-1]


class _SwiGlu(NamedTuple):
    """``x = gate * sigmoid(gate) * up`` over the halves of one fused output ``whole``: the tensors and layers."""

    x: object
    whole: object
    layers: tuple  # the gate and up slices, the sigmoid, gate * sigmoid(gate), and that * up (making x)


def _only_swiglu_reads(trt, rw: _Rewrite, chain: _SwiGlu, down) -> bool:
    """Whether the fused output, the slices and the SwiGLU ops are read only by each other (and by Shape layers: the
    slices' sizes) and x by ``down`` alone: then nothing else needs them once the gate/up multiply applies SwiGLU."""
    own, shape = {layer.name for layer in chain.layers}, trt.LayerType.SHAPE
    for t in (chain.whole,) + tuple(layer.get_output(0) for layer in chain.layers[:-1]):
        others = [r for r, _ in rw.readers(t) if r.name not in own and r.type != shape]
        if t.name in rw.index.outputs or others:
            return False
    return chain.x.name not in rw.index.outputs and all(r.name == down.name for r, _ in rw.readers(chain.x))


def _swiglu_chain(trt, index, x, w, w_layout: int) -> _SwiGlu | None:
    """The SwiGLU ops making ``x`` when ``x = gate * sigmoid(gate) * up`` (the exporter's SiLU, ``export/graph.py``)
    with gate and up the two halves of one fused gate/up output ``[gate | up]`` (..., 2K), and ``w`` takes K inputs;
    else None."""
    def made(t, kind):
        layer = index.producers.get(t.name) if t is not None else None
        # ILayer's own type: a layer cast to its subclass before (an IActivationLayer's .type is its ActivationType)
        return layer if layer is not None and trt.ILayer.type.__get__(layer) == kind else None

    outer = made(x, trt.LayerType.ELEMENTWISE)
    if outer is None:
        return None
    outer.__class__ = trt.IElementWiseLayer
    if outer.op != trt.ElementWiseOperation.PROD:
        return None
    for act_j in (0, 1):
        inner = made(outer.get_input(act_j), trt.LayerType.ELEMENTWISE)
        if inner is None:
            continue
        inner.__class__ = trt.IElementWiseLayer
        if inner.op != trt.ElementWiseOperation.PROD:
            continue
        for gate_j in (0, 1):
            gate = inner.get_input(gate_j)
            sig = made(inner.get_input(1 - gate_j), trt.LayerType.ACTIVATION)
            if sig is None:
                continue
            sig.__class__ = trt.IActivationLayer
            if sig.type != trt.ActivationType.SIGMOID or sig.get_input(0).name != gate.name:
                continue
            up = outer.get_input(1 - act_j)
            g = _slice_of(trt, index, gate, "mlp.gate_proj.weight")
            u = _slice_of(trt, index, up, "mlp.up_proj.weight")
            if g is None or u is None or g[0].name != u[0].name:
                return None
            K = w.shape[1 if w_layout == 1 else 0]
            if _last_axis(g[0]) != 2 * K or g[1] != 0 or u[1] != K:
                return None
            slices = (index.producers[gate.name], index.producers[up.name])
            return _SwiGlu(x, g[0], slices + (sig, inner, outer))
    return None


def fold_rotary_qkv(ctx: NetworkContext) -> int:
    """Each block whose rotary plugin (``rotary.i``) reads the q and k slices of one fused q/k/v multiply, and whose
    v (``Anchors.v_new``, read by the attention plugin or, in portable-static, by TensorRT's attention and the
    ``present.*.value`` output) is that output's last slice through the exporter's reshape and transpose, gets one
    rotary layer reading the fused output whole and writing q, k and v (``plugin.add_rotary`` with ``k_lin=None``);
    v's readers read its third output.

    Returns:
        How many blocks were folded.

    Raises:
        ToolkitError: the plugin rejected a block's fields.
    """
    from trtllm_kit.engine import plugin as P

    trt, network = ctx.trt, ctx.network
    index = NetworkIndex(network)
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    exported = _exported_heads(ctx.onnx_path, ctx.spec.num_layers) if ctx.onnx_path is not None else set()
    done = 0
    for i, L in enumerate(ctx.spec.layers):
        rope, v_new = layers.get(f"rotary.{i}"), index.tensors.get(Anchors.v_new(i))
        if rope is None or v_new is None or rope.num_inputs != 4:
            continue
        q = _slice_of(trt, index, rope.get_input(0), "self_attn.q_proj.weight")
        k = _slice_of(trt, index, rope.get_input(1), "self_attn.k_proj.weight")
        v_lin = _heads_input(trt, index, v_new, i, exported)
        v = _slice_of(trt, index, v_lin, "self_attn.v_proj.weight") if v_lin is not None else None
        if q is None or k is None or v is None or len({q[0].name, k[0].name, v[0].name}) != 1:
            continue
        qw, kvw = L.n_heads * L.head_dim, L.n_kv_heads * L.head_dim
        whole, scale = q[0], ctx.rope_scales.get(rope.name)
        if (q[1], k[1], v[1]) != (0, qw, qw + kvw) or _last_axis(whole) != qw + 2 * kvw or scale is None:
            continue
        layer = P.add_rotary(trt, network, whole, None, rope.get_input(2), rope.get_input(3), L.n_heads,
                             L.n_kv_heads, L.head_dim, scale, name=f"rotary.{i}.qkv")
        pin_to_activations(ctx, layer)
        for o, old in enumerate((rope.get_output(0), rope.get_output(1), v_new)):
            index.redirect(old, layer.get_output(o))
        done += 1
    return done


def fold_rope_into_gemms(ctx: NetworkContext, made: dict) -> int:
    """Each block's fused rotary layer (``rotary.i.qkv``, ``fold_rotary_qkv``) whose input is the whole output of a
    GEMM plugin layer in ``made`` (``fold_into_gemms``), read by nothing else, with no epilogue yet and head_dim a
    multiple of 8 (the GEMV's row pairs): that layer is made again with the rotary epilogue (``plugin.add_gemm``
    with ``rope=``), writing q, k and v in the rotary layer's place.

    Returns:
        How many blocks were folded.

    Raises:
        ToolkitError: the plugin rejected a block's fields.
    """
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.gemm import pin_to_weight_type

    trt, network = ctx.trt, ctx.network
    rw = _Rewrite(ctx)
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    done = 0
    for i, L in enumerate(ctx.spec.layers):
        rope = layers.get(f"rotary.{i}.qkv")
        scale = ctx.rope_scales.get(f"rotary.{i}")
        if rope is None or rope.num_inputs != 3 or rope.name not in rw.live or scale is None or L.head_dim % 8:
            continue
        whole = rope.get_input(0)
        gemm = rw.index.producers.get(whole.name)
        fields = made.get(gemm.name) if gemm is not None else None
        if (fields is None or fields["epilogue"] != "none" or whole.name in rw.index.outputs
                or [r.name for r, _ in rw.readers(whole)] != [rope.name]):
            continue
        w = gemm.get_input(1)  # the inputs it reads now (after any later fold re-pointed them)
        new = P.add_gemm(trt, network, gemm.get_input(0), w, name=f"{gemm.name}.rope", w_layout=fields["w_layout"],
                         prologue=fields["prologue"], eps=fields["eps"],
                         scale=gemm.get_input(2) if fields["prologue"] == "rms_norm" else None,
                         rope=(L.n_heads, L.n_kv_heads, L.head_dim, scale), cos=rope.get_input(1),
                         sin=rope.get_input(2))
        pin_to_weight_type(ctx, new, w)
        for o in range(rope.num_outputs):  # q, k and v
            rw.replace(rope.get_output(o), new.get_output(o))
        done += 1
    return done


def _heads_input(trt, index, v_new, i: int, exported: set[int]):
    """The (B, S, nkv * hd) tensor that block ``i``'s ``v_new`` (B, nkv, S, hd) was made from, when the export made it
    with ``heads()`` (a Reshape to (B, S, nkv, hd) then a Transpose (0, 2, 1, 3): ``exported``, from
    ``_exported_heads``) and the parser wrote that as one or two Shuffle layers (TensorRT 8.6 writes a transpose that
    only moves a 1-long axis, nkv = 1, as a reshape); else None."""
    if v_new.name != Anchors.v_new(i) or i not in exported:
        return None
    t = v_new
    for _ in range(2):
        shuffle = index.producers.get(t.name)
        if shuffle is None or shuffle.type != trt.LayerType.SHUFFLE:
            break
        t = shuffle.get_input(0)
    return t if t is not v_new else None


def _exported_heads(onnx_path, num_layers: int) -> set[int]:
    """The blocks whose ``v_new`` the export made as ``Transpose(Reshape(v_lin), perm=[0, 2, 1, 3])``
    (``export/graph.py`` ``heads()``), read from the graph (its weights are not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for i in range(num_layers):
        transpose = producers.get(Anchors.v_new(i))
        if transpose is None or transpose.op_type != "Transpose":
            continue
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        reshape = producers.get(transpose.input[0])
        if perm == [0, 2, 1, 3] and reshape is not None and reshape.op_type == "Reshape":
            found.add(i)
    return found

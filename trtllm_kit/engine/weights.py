"""Weights as engine inputs (``--weights inputs``): the weight matrices leave the plan and become network
inputs with fixed shapes, stored beside the engine in ``weights.safetensors`` and bound once per execution
context. The safetensors keys are the engine's input names (the ONNX initializer names), so a server binds
them without this toolkit (``engines/README.md``); engines whose ``weight_inputs.sha256`` agree can share one copy
(with the GEMM plugin the multiplied weights are stored out x in under the same names: compare the files, not the
names).

Why: on TensorRT 8.6 the single Myelin graph that takes a LLaMA network spends its compile time on the
constant weights it sees. H200, llama-7b cut to 2 blocks, decode profile (``scripts/probe_trt_build.py``,
11 builds at once): 14.1 s with every large constant made a float32 input, 70.9 s with REFIT, > 330 s
with neither (``docs/benchmarks/h200-trt86/README.md``). Handed to the parser as fp16 graph inputs
(``parse_graph``) and written beside the build (``weight_file``), the full portable-static llama-7b builds in 159 s
on TensorRT 8.6 (H200, seventeenth session; 321 s when the parser read them as constants).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pydantic import field_validator

from trtllm_kit.engine.weight_file import Deferred
from trtllm_kit.errors import ToolkitError
from trtllm_kit.utils.manifest import Record

WEIGHTS_FILE = "weights.safetensors"
FORMAT_NOTE = "trtllm-kit weight inputs: key = engine input name"  # the file's safetensors metadata "format"
# What a detached weight constant keeps (module-level: arrays given to TensorRT must outlive the build).
_PLACEHOLDER = {"float16": np.zeros(1, np.float16), "float32": np.zeros(1, np.float32)}


class WeightInputsRecord(Record):
    """The weights an engine takes as inputs: where they are and which input each feeds.

    Attributes:
        file: the safetensors file beside ``model.engine``; its keys are the engine input names.
        sha256: of that file.
        bytes: of that file.
        tensors: engine input name -> shape (static in every profile; dtype as the engine declares it).
    """

    file: str
    sha256: str
    bytes: int
    tensors: dict[str, list[int]]

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if v != Path(v).name or v in ("", ".", ".."):
            raise ValueError(f"{v!r} is not a file name inside the engine directory")
        return v

    def check_file(self, engine_dir: Path) -> Path:
        """The weights file, refused in one line when it is missing or not the size recorded (as ``model.engine``
        is; the sha256 is for servers and is not recomputed on every load).

        Raises:
            ToolkitError: a missing or resized file.
        """
        path = Path(engine_dir) / self.file
        if not path.is_file() or path.stat().st_size != self.bytes:
            size = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
            raise ToolkitError(f"{path} is {size}, engine.json says {self.bytes} bytes",
                               "build the engine again with `trtllm-kit build`")
        return path


# Build knobs for A/Bs (environment variables, value -> setting): the fusion of one activation's projections and the
# GEMM plugin's weight layout. Unset: both on with the GEMM plugin. Engines record what they used
# (``builder_settings.weight_fusion``/``weight_layout``), and reuse compares it (``EngineManifest.differences``).
FUSE_ENV, LAYOUT_ENV, GEMV_ENV, FOLD_ENV = "TRTLLM_KIT_FUSE", "TRTLLM_KIT_GEMM_LAYOUT", "TRTLLM_KIT_GEMV", "TRTLLM_KIT_FOLD"
SCALE_ENV, PAST_ENV = "TRTLLM_KIT_SCALE_IN_WEIGHTS", "TRTLLM_KIT_PAST_ATTENTION"
# portable-static's forms of the attention over its cache (kv_layouts.new_rows_onnx), the default first, and those
# whose value caches are stored (B, kv_heads, head_dim, positions)
PAST_FORMS = ("split-vt", "reduce-vt", "reduce", "matmul")
VALUES_TRANSPOSED = ("reduce-vt", "split-vt")
_KNOBS = {FUSE_ENV: {"1": "on", "0": "off", "qkv": "qkv"}, LAYOUT_ENV: {"out_x_in": "out_x_in", "in_x_out": "in_x_out"},
          FOLD_ENV: {"1": "on", "0": "off"},  # folds.py: the small ops folded into the plugins
          # read by the GEMM plugin when an engine is loaded: its decode GEMV, and the loads in flight per lane in it
          GEMV_ENV: {"1": "on", "0": "off"}, "TRTLLM_KIT_GEMV_UNROLL": {"4": "4", "8": "8", "16": "16"},
          "TRTLLM_KIT_PDL": {"1": "on", "0": "off"},  # and the decode kernels' programmatic dependent launch
          SCALE_ENV: {"1": "on", "0": "off"},  # folds.py: RMSNorm scales multiplied into the weights after them
          PAST_ENV: {form: form for form in PAST_FORMS},  # portable-static's past
          # read by the attention plugin: decode blocks per kv head where the grid would leave multiprocessors idle
          "TRTLLM_KIT_SPLIT_KV": {"0": "auto", "1": "off", **{str(n): str(n) for n in (2, 4, 8, 16)}}}


def check_knobs() -> None:
    """The A/B environment variables (``TRTLLM_KIT_FUSE``, ``TRTLLM_KIT_GEMM_LAYOUT``, ``TRTLLM_KIT_FOLD``,
    ``TRTLLM_KIT_GEMV``, ``TRTLLM_KIT_GEMV_UNROLL``, ``TRTLLM_KIT_PDL``, ``TRTLLM_KIT_SPLIT_KV``,
    ``TRTLLM_KIT_SCALE_IN_WEIGHTS``, ``TRTLLM_KIT_PAST_ATTENTION``) hold a value they know, or are unset: checked
    before any work by ``trtllm-kit build``, ``run``/``bench`` and the TensorRT runner.

    Raises:
        ToolkitError: another value, naming the variable and the values it takes.
    """
    import os

    for env, values in _KNOBS.items():
        value = os.environ.get(env)
        if value is not None and value not in values:
            shown = value if value and value == value.strip() else repr(value)  # '' or ' matmul' visible as such
            raise ToolkitError(f"{env}={shown} is not one of {', '.join(values)} (lower case, exactly)",
                               f"unset {env} or use one of those")


def weight_input_choices(gemm: str) -> tuple[str, str]:
    """What a ``--weights inputs`` build does with the weights given who multiplies them (``gemm``: ``"plugin"`` or
    ``"trt"``): (fusion ``"on"``/``"off"``/``"qkv"`` (q/k/v only), layout ``"out_x_in"``/``"in_x_out"``). Both on with
    the GEMM plugin, whose decode GEMV wants (N, K) rows; ``TRTLLM_KIT_FUSE=0/1/qkv`` and
    ``TRTLLM_KIT_GEMM_LAYOUT=in_x_out/out_x_in`` override them.

    Raises:
        ToolkitError: another value of any knob (``check_knobs``).
    """
    plugin = gemm == "plugin"
    return knob(FUSE_ENV, "on" if plugin else "off"), knob(LAYOUT_ENV, "out_x_in" if plugin else "in_x_out")


def knob(env: str, default: str) -> str:
    """The setting an A/B knob's value names (``_KNOBS``), or ``default`` when the variable is unset.

    Raises:
        ToolkitError: any knob holds a value it does not know (``check_knobs``).
    """
    import os

    check_knobs()
    value = os.environ.get(env)
    return _KNOBS[env][value] if value is not None else default


def is_weight_matrix(name: str, shape) -> bool:
    """A model parameter matrix as the exporter names them (``model.layers.3.mlp.up_proj.weight``,
    ``model.embed_tokens.weight``, ``lm_head.weight``): the bytes of a LLaMA. Norm scales (1-D), rotary
    tables and masks stay in the plan."""
    return name.endswith(".weight") and len(shape) >= 2


def parse_graph(parser, onnx_path: Path, graph: bytes | None = None, weight_inputs: bool = False) -> bool:
    """Parse an export into ``parser``'s network: ``graph`` (a layout's rewrite of it, serialized, its weights left in
    the export's external data) or else the file as exported.

    With ``weight_inputs`` (a ``--weights inputs`` build) every weight matrix initializer (``is_weight_matrix``) is
    handed to the parser as a graph input of the same name, type and shape instead, so the parser never reads its
    values: TensorRT 8.6's parser read and widened all 13.5 GB of a 7B model's fp16 weights to float constants, which
    ``weights_to_inputs`` then dropped again (H200, llama-7b: most of the 31 s of "parsing ONNX", sixteenth session).
    ``weights_to_inputs`` reads the values from the export.

    Returns:
        whether the parser accepted the graph (its errors are on the parser).
    """
    onnx_path = Path(onnx_path)
    if not weight_inputs:
        return parser.parse(graph, str(onnx_path)) if graph is not None else parser.parse_from_file(str(onnx_path))
    import onnx
    from onnx import helper

    model = onnx.load_from_string(graph) if graph is not None else onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    moved = [i for i in g.initializer if is_weight_matrix(i.name, i.dims)]
    kept = [i for i in g.initializer if not is_weight_matrix(i.name, i.dims)]
    g.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in moved)
    del g.initializer[:]
    g.initializer.extend(kept)
    return parser.parse(model.SerializeToString(), str(onnx_path))


def weights_to_inputs(trt, network, onnx_path: Path, fuse: bool | str = False, out_x_in: bool = False) -> dict:
    """Turn every weight matrix constant (``is_weight_matrix``) into a network input of the same name (a weight parsed
    as a graph input, ``parse_graph``'s ``weight_inputs``, stays one, or is replaced by its stored form).

    With ``fuse``, the multiplies of one activation by several weights (a block's q/k/v projections, its gate/up)
    become one multiply by an input holding those weights side by side (``fuse_projections``; ``"qkv"``: only
    groups of three or more, i.e. not gate/up).

    With ``out_x_in``, a weight read by one multiply only (every projection and an untied LM head; not the embedding
    table) is stored (N, K) = (out, in), PyTorch's ``nn.Linear`` layout, and the network reads it through a transpose
    (which the GEMM plugin's rewrite removes: ``matmuls_by_weight``). Why: the plugin's decode GEMV streams each
    output's K weights as one contiguous row, and cuBLAS multiplies LLM-Pruner's unaligned shapes 14% faster so (H200,
    ``scripts/gemm_floor.py``; ``docs/benchmarks/h200-trt86/README.md``, eighth session).

    Args:
        trt: the TensorRT module the network belongs to.
        network: ``onnx_path`` parsed into an ``INetworkDefinition``, rewritten in place.
        onnx_path: the export; the values come from its initializers (memory-mapped external data), exactly
            as exported, whatever the TensorRT version's constant-layer API.
        fuse, out_x_in: as above.

    Returns:
        input name -> its value in network order: a read-only memory map of the export (the constant's dtype and
        shape), or a ``weight_file.Deferred`` (N, K) for a weight stored out x in or a fused group (made when the
        weights file is written, ``weight_file.writing_weights``).

    Raises:
        ToolkitError: a weight whose dtype numpy cannot hold (bf16: export fp16 or fp32 instead), or whose
            shape in the network differs from the export's.
    """
    from trtllm_kit.engine.kv_layouts import NetworkIndex

    floats = {trt.float16: "float16", trt.float32: "float32"}
    index = NetworkIndex(network)
    picked = []
    found = [(layer, layer.get_output(0)) for layer in (network.get_layer(li) for li in range(network.num_layers))
             if layer.type == trt.LayerType.CONSTANT]
    found += [(None, network.get_input(i)) for i in range(network.num_inputs)]  # parsed as graph inputs
    for layer, out in found:
        shape = tuple(out.shape)
        # The initializer's name: the constant's output on TensorRT 8.6, its layer on 10.x/RTX ("<name>_output"); a
        # graph input's own (parse_graph's weight_inputs)
        name = next((n for n in ((out.name,) if layer is None else (out.name, layer.name))
                     if is_weight_matrix(n, shape)), None)
        if name is None:
            continue
        if out.dtype not in floats:
            kind = str(out.dtype).split(".")[-1].lower()
            raise ToolkitError(f"weight {name} is {kind}, which --weights inputs cannot store",
                               "export with --dtype fp16 or fp32, or build with --weights engine")
        picked.append((name, layer, out, shape))
    values = onnx_initializers(onnx_path, [name for name, *_ in picked])
    for name, layer, out, shape in picked:  # every weight, fused or not, is what the parser saw
        a = values[name]
        if tuple(a.shape) != shape or (a.dtype.name != floats[out.dtype] and not _widened(trt, a, out)):
            raise ToolkitError(f"weight {name} is {a.dtype} {list(a.shape)} in {onnx_path} but {out.dtype} "
                               f"{list(shape)} in the parsed network", "build with --weights engine")
    arrays = {}
    if fuse:
        arrays.update(fuse_projections(trt, network, index, picked, values, least=3 if fuse == "qkv" else 2,
                                       out_x_in=out_x_in))
        fused = {n for key in arrays for n in key.split(FUSED_SEP)}
        picked = [p for p in picked if p[0] not in fused]
    for name, layer, out, shape in picked:
        a = values[name]
        widened = _widened(trt, a, out)
        readers = index.consumers.get(out.name, [])  # keyed by the name the index saw: look up before renaming
        transpose = out_x_in and _matmul_reading(trt, index, out) is not None
        if layer is None and not transpose:  # a graph input already, as exported
            arrays[name] = a
            continue
        out.name = f"{name}.constant"
        raw = network.add_input(name, trt.float16 if widened else out.dtype, shape[::-1] if transpose else shape)
        inp = _in_x_out(network, raw, name) if transpose else raw
        if widened:  # the input stays fp16 (as exported, half the bytes); readers get the type the parser gave them
            inp = network.add_cast(inp, trt.float32).get_output(0)
        for reader, j in readers:
            if widened and j == 0 and reader.type == trt.LayerType.GATHER:
                _gather_then_widen(trt, network, index, reader, raw)
            else:
                reader.set_input(j, inp)
        _detach(trt, network, layer, out)
        arrays[name] = deferred_rows([a], transpose=True) if transpose else a
    return arrays


def stacked_rows(mats: list, transpose: bool) -> np.ndarray:
    """The 2-D arrays ``mats`` (each (K, N_i), or (N_i, K) without ``transpose``) as one new C-contiguous array:
    their transposes (N_i, K) stacked along the rows (``transpose``), or the arrays side by side, (K, sum N_i).

    The copies run through torch's CPU threads: numpy took 0.35 s to transpose one 11008 x 4096 fp16 matrix (torch
    0.08 s) on this project's 2-core CI machine, and a 7B model's ~13 GB of weights went through numpy in most of the
    101 s of "preparing the network" of an H200 build (``docs/benchmarks/h200-trt86/README.md``, thirteenth session).
    Sources may be read-only memory maps of the export; they are only read.
    """
    import warnings

    import torch

    first = np.asarray(mats[0])
    rows = [np.asarray(m).shape[1] for m in mats]
    K = first.shape[0]
    out = np.empty((sum(rows), K) if transpose else (K, sum(rows)), first.dtype)
    dst = torch.from_numpy(out)
    at = 0
    with warnings.catch_warnings():  # torch warns that a read-only source could be written through: it is not
        warnings.simplefilter("ignore", UserWarning)
        for m, n in zip(mats, rows):
            src = torch.from_numpy(np.asarray(m))
            if transpose:
                dst[at:at + n].copy_(src.t())
            else:
                dst[:, at:at + n].copy_(src)
            at += n
    return out


def deferred_rows(mats: list, transpose: bool) -> Deferred:
    """``stacked_rows(mats, transpose)``, made when it is read (the weights file's writer thread makes it while
    TensorRT builds: ``weight_file``)."""
    rows = sum(m.shape[1] for m in mats)
    K = mats[0].shape[0]
    return Deferred((rows, K) if transpose else (K, rows), mats[0].dtype, lambda: stacked_rows(mats, transpose))


def _widened(trt, a, out) -> bool:
    """Whether TensorRT 8.6's parser widened the fp16 weight ``a`` to the float constant ``out``."""
    return a.dtype == np.float16 and out.dtype == trt.float32


def _detach(trt, network, layer, out) -> None:
    """Shrink a weight constant nothing reads any more to one element: it stays in the network, and its values would
    still be serialized (the H200's 7537 MB llama-7b@8 plan with dangling weight inputs). A weight parsed as a graph
    input (``layer`` None) is removed from the network's inputs."""
    if layer is None:
        network.remove_tensor(out)
        return
    layer.__class__ = trt.IConstantLayer
    layer.weights = _PLACEHOLDER["float32" if out.dtype == trt.float32 else "float16"]
    layer.shape = (1,)


def _in_x_out(network, raw, name: str):
    """The (K, N) view of a weight input stored (N, K): one transpose, which the GEMM plugin's rewrite skips."""
    shuffle = network.add_shuffle(raw)
    shuffle.first_transpose = (1, 0)
    shuffle.name = f"{name}.in_x_out"
    return shuffle.get_output(0)


FUSED_SEP = "+"  # a fused input is named by its members: "model.layers.0.self_attn.q_proj.weight+...k_proj.weight+..."


def _matmul_reading(trt, index, tensor):
    """The MatrixMultiply (no transposes) that reads ``tensor`` as its weight operand (input 1) through layers that
    keep its values (``gemm.keeps_values``), each the only reader: ``(layer, path)`` with ``path`` the tensors on the
    way (``tensor`` first), else None."""
    from trtllm_kit.engine.gemm import keeps_values

    path = [tensor]
    for _ in range(4):
        readers = index.consumers.get(path[-1].name, [])
        if len(readers) != 1:
            return None
        layer, j = readers[0]
        if layer.type == trt.LayerType.MATRIX_MULTIPLY and j == 1:
            layer.__class__ = trt.IMatrixMultiplyLayer
            ok = layer.op0 == trt.MatrixOperation.NONE and layer.op1 == trt.MatrixOperation.NONE
            return (layer, path) if ok else None
        if keeps_values(trt, layer):
            path.append(layer.get_output(0))
            continue
        return None
    return None


def fuse_projections(trt, network, index, picked, values, least: int = 2, out_x_in: bool = False) -> dict:
    """One multiply per activation: weights that multiply the same activation (``x @ Wq``, ``x @ Wk``, ``x @ Wv``)
    become one input ``[Wq | Wk | Wv]`` (K, Nq + Nk + Nv), one multiply, and a slice of its output per old
    multiply, whose readers move to it. At decode batch 1 a 4096 x 4096 multiply streamed 2.1 TB/s and a
    4096 x 11008 one 3.2 TB/s (H200, TensorRT 8.6, cuBLASLt plugin, ``scripts/profile_layers.py``): one wide
    multiply instead of three narrow ones.

    The old multiplies read a slice of the fused input and are left unread (TensorRT drops them); their constants
    are shrunk by the caller like every detached weight.

    Args:
        picked: ``(name, constant layer, its output, shape)`` of every weight matrix (``weights_to_inputs``).
        values: name -> array (the export's initializers).
        least: the fewest weights of one activation that fuse (3: q/k/v only, not gate/up).
        out_x_in: store each fused input (sum of N, K), the members stacked, read through a transpose
            (``weights_to_inputs``).

    Returns:
        fused input name (members joined by ``FUSED_SEP``) -> ``Deferred`` (K, sum of N), or (sum of N, K) with
        ``out_x_in``; empty when nothing fuses.
    """
    groups: dict[str, list] = {}
    for name, layer, out, shape in picked:
        found = _matmul_reading(trt, index, out)
        if found is not None and len(shape) == 2:
            mm, path = found
            groups.setdefault(mm.get_input(0).name, []).append((name, layer, out, shape, mm, path))
    arrays = {}
    for members in groups.values():
        if len(members) < least or len({m[3][0] for m in members}) != 1 or len({m[2].dtype for m in members}) != 1:
            continue
        names = [m[0] for m in members]
        K, widths = members[0][3][0], [m[3][1] for m in members]
        key = FUSED_SEP.join(names)
        arrays[key] = deferred_rows([values[n] for n in names], transpose=out_x_in)
        out0 = members[0][2]
        widened = _widened(trt, arrays[key], out0)
        raw = network.add_input(key, trt.float16 if widened else out0.dtype,
                                (sum(widths), K) if out_x_in else (K, sum(widths)))
        w = _in_x_out(network, raw, key) if out_x_in else raw
        if widened:
            w = network.add_cast(w, trt.float32).get_output(0)
        x = members[0][4].get_input(0)
        lead = len(x.shape) - 2
        w_nd = w
        if lead > 0:  # MatrixMultiply wants equal ranks: (1, ..., K, N), as the parser broadcasts
            shuffle = network.add_shuffle(w)
            shuffle.reshape_dims = (1,) * lead + (K, sum(widths))
            w_nd = shuffle.get_output(0)
        mm = network.add_matrix_multiply(x, trt.MatrixOperation.NONE, w_nd, trt.MatrixOperation.NONE)
        mm.name = f"fused.{members[0][4].name}"
        y = mm.get_output(0)
        shape_y = network.add_shape(y).get_output(0)
        int_t = np.int64 if shape_y.dtype == getattr(trt, "int64", None) else np.int32
        head = network.add_slice(shape_y, (0,), (len(x.shape) - 1,), (1,)).get_output(0)  # all but the last axis
        offset = 0
        for (name, layer, out, shape, old_mm, path), width in zip(members, widths):
            # the old multiply reads its own columns of the fused input: valid, and unread once its readers move
            view = network.add_slice(w, (0, offset), (K, width), (1, 1)).get_output(0)
            first_reader, j = index.consumers[path[0].name][0]
            first_reader.set_input(j, view)
            _keep.append(np.array([width], int_t))
            last = network.add_constant((1,), _keep[-1])
            dims = network.add_concatenation([head, last.get_output(0)])
            dims.axis = 0
            part = network.add_slice(y, (0,) * (len(x.shape) - 1) + (offset,), (1,) * len(x.shape),
                                     (1,) * len(x.shape))
            part.set_input(2, dims.get_output(0))
            part.name = f"fused.slice.{name}"
            for reader, k in index.consumers.get(old_mm.get_output(0).name, []):
                reader.set_input(k, part.get_output(0))
            offset += width
            _detach(trt, network, layer, out)
    return arrays


_keep: list = []  # the shape constants' numpy arrays: TensorRT reads them at build time, so they must outlive it


def _gather_then_widen(trt, network, index, gather, raw) -> None:
    """An embedding lookup reads the fp16 weight input as bound and widens only the rows it gathered.

    Widening first (cast, then gather) made TensorRT 8.6 convert the whole 262 MB embedding table every decode step
    (H200, llama-7b: a 0.33 ms copy into the first fused region, `scripts/profile_layers.py`).
    """
    rows = gather.get_output(0)
    readers = index.consumers.get(rows.name, [])
    gather.set_input(0, raw)
    widened = network.add_cast(rows, trt.float32).get_output(0)
    for reader, k in readers:
        reader.set_input(k, widened)


def onnx_initializers(onnx_path: Path, names: list[str]) -> dict:
    """The named initializers of an ONNX file as numpy arrays; external data is memory-mapped, not read.

    Raises:
        ToolkitError: a name the file does not hold.
    """
    import onnx
    from onnx import numpy_helper

    from trtllm_kit.export.manifest import external_span

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for name in names:
        if name not in inits:
            raise ToolkitError(f"{onnx_path} has no initializer {name}", "export the model again")
        init = inits[name]
        if init.data_location != onnx.TensorProto.EXTERNAL:
            out[name] = numpy_helper.to_array(init)
            continue
        location, offset, _, dtype = external_span(init)
        out[name] = np.memmap(onnx_path.parent / location, dtype=dtype, mode="r", offset=offset, shape=tuple(init.dims))
    return out


def save_weights(arrays: dict, directory: Path) -> WeightInputsRecord:
    """Write ``arrays`` (engine input name -> array or ``Deferred``) to ``directory/weights.safetensors`` and wait
    for it; returns its record for ``engine.json`` (``weight_file.writing_weights`` writes it beside other work).

    Raises:
        OSError: the file could not be written.
    """
    from trtllm_kit.engine.weight_file import writing_weights

    with writing_weights(arrays, directory) as writer:
        return writer.result()


def load_weight_inputs(engine_dir: Path, record: WeightInputsRecord, engine, device) -> dict:
    """The weight tensors of an engine built with ``--weights inputs``, on ``device``, checked against the engine.

    Returns:
        engine input name -> torch tensor (keep them alive while any context binds them).

    Raises:
        ToolkitError: a missing, resized or unreadable file, or a tensor whose name, shape or dtype the engine
            does not declare as an input.
    """
    import torch
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    path = record.check_file(engine_dir)
    try:
        tensors = load_file(str(path), device=str(device))
    except SafetensorError as e:
        raise ToolkitError(f"{path} is not a readable safetensors file ({e})",
                           "build the engine again with `trtllm-kit build`") from e
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    half = {"HALF": torch.float16, "FLOAT": torch.float32}
    for name, t in tensors.items():
        if name not in names or name not in record.tensors:
            raise ToolkitError(f"{path} holds {name}, which the engine does not take as an input",
                               "build the engine again with `trtllm-kit build`")
        want = half.get(str(engine.get_tensor_dtype(name)).split(".")[-1].upper())
        if list(t.shape) != list(engine.get_tensor_shape(name)) or t.dtype != want:
            raise ToolkitError(f"{name} in {path} is {t.dtype} {list(t.shape)}, the engine wants "
                               f"{engine.get_tensor_dtype(name)} {list(engine.get_tensor_shape(name))}",
                               "build the engine again with `trtllm-kit build`")
    missing = set(record.tensors) - set(tensors)
    if missing:
        raise ToolkitError(f"{path} lacks {len(missing)} weight(s), e.g. {sorted(missing)[0]}",
                           "build the engine again with `trtllm-kit build`")
    return tensors

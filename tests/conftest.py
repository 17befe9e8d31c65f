import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

TINY = ["tiny-llama", "tiny-llama-depth", "tiny-llama-width"]


def full_tensorrt():
    """The full ``tensorrt`` module (it has a Builder: plugins, the 8.6 runtime), or None where only TensorRT-RTX
    or nothing is installed; for the GPU tests of the toolkit's plugins."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt if hasattr(trt, "Builder") else None


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    exe = shutil.which("trtllm-kit")
    assert exe, "the trtllm-kit console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"trtllm-kit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A failure after some work started: progress lines may precede it, but the error is one line
    (the last), there is no traceback, and the exit code is non-zero."""
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "%|" not in ln]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert sum(ln.startswith("error: ") for ln in lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[-1], lines[-1]


def save_hf_llama(path: Path, scale_mlp: float = 1.0, seed: int = 0, **config) -> Path:
    """A tiny random LlamaForCausalLM written by transformers' own save_pretrained (GQA by default)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    kw = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(LlamaConfig(**{**kw, **config}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.2)
            if ".mlp." in name:
                p.mul_(scale_mlp)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """fp16 exports (last-position logits) of the three tiny presets, validated by the exporter."""
    from trtllm_kit.export import onnx_from_model

    root = tmp_path_factory.mktemp("exports")
    return {name: onnx_from_model(name, root / name, progress=False).out_dir for name in TINY}


@pytest.fixture(scope="session")
def hf_tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random transformers LlamaForCausalLM (with grouped-query attention) saved by save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("hf") / "tiny-hf"
    model.save_pretrained(path)
    return path


def emulate_kv_update(model_bytes: bytes) -> onnx.ModelProto:
    """Stand-in for the KV-cache update layer, in plain ONNX, so ONNX Runtime can run the in-place graph.

    Each present Concat becomes ScatterElements writing the new tokens at write_indices + 0..S-1, which
    is the documented semantics of TensorRT's IKVCacheUpdateLayer (kLINEAR).
    """
    model = onnx.load_from_string(model_bytes)
    g = model.graph
    nodes = []
    for n in g.node:
        if n.op_type == "Concat" and n.output[0].startswith("present."):
            past, new = n.input
            o = n.output[0]
            nodes += [
                helper.make_node("Shape", [new], [o + "_shape"]),
                helper.make_node("Shape", [new], [o + "_s"], start=2, end=3),
                helper.make_node("Squeeze", [o + "_s", "c_axes0"], [o + "_s0"]),
                helper.make_node("Range", ["c_zero", o + "_s0", "c_one"], [o + "_ar"]),
                helper.make_node("Reshape", [o + "_ar", o + "_r1"], [o + "_ar4"]),
                helper.make_node("Cast", ["write_indices"], [o + "_wi"], to=TensorProto.INT64),
                helper.make_node("Reshape", [o + "_wi", o + "_r2"], [o + "_wi4"]),
                helper.make_node("Add", [o + "_wi4", o + "_ar4"], [o + "_pos"]),
                helper.make_node("Expand", [o + "_pos", o + "_shape"], [o + "_idx"]),
                helper.make_node("ScatterElements", [past, o + "_idx", new], [o], axis=2),
            ]
            g.initializer.extend([onnx.numpy_helper.from_array(np.array([1, 1, -1, 1], np.int64), o + "_r1"),
                                  onnx.numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), o + "_r2")])
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    return model

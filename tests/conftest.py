import shutil
import subprocess
from pathlib import Path

import pytest
import torch

TINY = ["tiny-llama", "tiny-llama-depth", "tiny-llama-width"]


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

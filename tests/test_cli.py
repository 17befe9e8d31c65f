import json
import shutil

from conftest import assert_one_line_error, cli


def test_help_and_models_list():
    assert "export" in cli("--help", check=True).stdout
    out = cli("models", check=True).stdout
    for name in ("llama-7b", "llama-7b-depth-27", "llama-7b-flap", "vicuna-13b-llmpruner", "tiny-llama-width"):
        assert name in out
    line = next(ln for ln in out.splitlines() if ln.startswith("llama-7b "))
    assert "32" in line and "6.74B" in line


def test_export_command_writes_validated_model(tmp_path):
    out = tmp_path / "w"
    proc = cli("export", "tiny-llama-width", "--out", str(out), check=True)
    assert "max rel err" in proc.stdout and "greedy tokens 20/20" in proc.stdout
    meta = json.loads((out / "export.json").read_text())
    assert meta["validation"]["passed"] and (out / "model.onnx").is_file()


def test_missing_path_is_one_line_error(tmp_path):
    out = tmp_path / "o"
    assert_one_line_error(cli("export", str(tmp_path / "nope"), "--out", str(out)), "neither a preset nor an existing path")
    assert not out.exists()


def test_non_llama_config_is_one_line_error(hf_tiny_checkpoint, tmp_path):
    bad = tmp_path / "gpt"
    shutil.copytree(hf_tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (bad / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o"
    assert_one_line_error(cli("export", str(bad), "--out", str(out)), "gpt_neox", "not a LLaMA-family model")
    assert not out.exists()


def test_broken_shapes_are_one_line_error(hf_tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "broken"
    shutil.copytree(hf_tiny_checkpoint, bad)
    t = load_file(bad / "model.safetensors")
    t["model.layers.2.mlp.down_proj.weight"] = t["model.layers.2.mlp.down_proj.weight"][:, :100].contiguous()
    save_file(t, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "o"
    assert_one_line_error(cli("export", str(bad), "--out", str(out)), "layer 2", "down")
    assert not out.exists()


def test_prune_command_and_bad_blocks(tmp_path):
    out = tmp_path / "p"
    cli("prune", "tiny-llama", "--drop-blocks", "1,2", "--out", str(out), check=True)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    assert_one_line_error(cli("prune", "tiny-llama", "--drop-blocks", "9", "--out", str(tmp_path / "q")), "out of range")
    assert not (tmp_path / "q").exists()

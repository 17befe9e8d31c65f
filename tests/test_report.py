import json
import os
import shutil
import subprocess

import pytest

from conftest import assert_one_line_error, cli
from trtllm_kit.bench.backends import RunOptions
from trtllm_kit.bench.results import SweepConfig
from trtllm_kit.bench.sweep import bench
from trtllm_kit.pipeline import ensure_export, resolve_model
from trtllm_kit.report import report_from_results


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    art = resolve_model("tiny-llama-depth")
    ensure_export(art, root / "onnx", progress=False)
    cfg = SweepConfig(batches=[1, 2, 4], inputs=[6, 10], outputs=[4], warmup=0, repeats=2, step_tokens=[16, 32],
                      step_past=8)
    path = root / "results.json"
    bench([art], ["eager", "ort"], cfg, path, RunOptions("cpu", "fp16"), progress=False)
    report_from_results([path], root / "out")
    return root / "out"


def test_report_files_and_charts_have_data(report_dir):
    for f in ("report.md", "report.html", "throughput_vs_latency.png", "latency_per_token.png", "speedup_over_eager.png"):
        assert (report_dir / f).stat().st_size > 1000, f
    counts = json.loads((report_dir / "chart_points.json").read_text())
    assert counts["throughput_vs_latency.png"] == 2 * 2 * 3  # 2 backends x 2 (in, out) panels x 3 batches
    assert counts["latency_per_token.png"] == 4 and counts["speedup_over_eager.png"] == 2 * 3  # ort only: eager is the baseline
    md = (report_dir / "report.md").read_text()
    assert "Speed-up over eager" in md and "Correctness" in md and "| tiny-llama-depth | ort |" in md


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; the README's set-up command installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = (report_dir / "report.html").as_uri()
    dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-charts-loaded="3/3"' in dom  # every chart image decoded in the browser
    shot = tmp_path / "shot.png"
    subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000


def test_report_cli_and_bad_input(report_dir, tmp_path):
    out = tmp_path / "r2"
    cli("report", str(report_dir.parent / "results.json"), "--out", str(out), check=True)
    assert (out / "report.html").is_file()
    assert_one_line_error(cli("report", str(tmp_path / "none.json"), "--out", str(tmp_path / "r3")), "does not exist")
    assert not (tmp_path / "r3").exists()

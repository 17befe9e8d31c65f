import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import TINY, assert_one_line_error, cli
from trtllm_kit.bench.backends import RunOptions
from trtllm_kit.bench.results import BenchResults, ModelRecord, Point, StepRow, SweepConfig
from trtllm_kit.bench.sweep import bench
from trtllm_kit.models.presets import PRESETS
from trtllm_kit.pipeline import resolve_model
from trtllm_kit.recipe import summary_lines
from trtllm_kit.report import report_from_results
from trtllm_kit.report.compare import families
from trtllm_kit.report.data import ModelFacts
from trtllm_kit.report.floor import bandwidth_of
from trtllm_kit.report.trust import trust_flags

H200 = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "h200-quick"


@pytest.fixture(scope="module")
def family_results(tmp_path_factory, tiny_exports):
    """The tiny family (dense, depth-pruned, width-pruned) timed on eager and ONNX Runtime on the CPU."""
    root = tmp_path_factory.mktemp("report")
    arts = []
    for name in TINY:
        art = resolve_model(name)
        art.onnx_dir = tiny_exports[name]
        arts.append(art)
    cfg = SweepConfig(batches=[1, 2, 4], inputs=[6, 10], outputs=[4], warmup=1, repeats=2, step_tokens=[16, 32],
                      step_past=8)
    path = root / "results.json"
    res = bench(arts, ["eager", "ort"], cfg, path, RunOptions("cpu", "fp16"), progress=False)
    return path, res


@pytest.fixture(scope="module")
def report_dir(family_results):
    path, _ = family_results
    report_from_results([path], path.parent / "out")
    return path.parent / "out"


def browser(tmp_path) -> list[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; the README's set-up command installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]


class Page(HTMLParser):
    """The text of a page as the browser left it: every table by id (rows of cell texts) and every paragraph."""

    def __init__(self, dom: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.texts: list[str] = []
        self._table = self._cell = self._text = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("p", "li", "h2", "h3"):
            self._text = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("p", "li", "h2", "h3") and self._text is not None:
            self.texts.append(" ".join("".join(self._text).split()))
            self._text = None

    def handle_data(self, data):
        for buf in (self._cell, self._text):
            if buf is not None:
                buf.append(data)

    def table(self, id_: str) -> list[dict[str, str]]:
        """Rows of table ``id_`` as {column header: cell}."""
        head, *rows = self.tables[id_]
        return [dict(zip(head, r)) for r in rows]


def render(html_path: Path, tmp_path) -> tuple[str, Page]:
    dom = subprocess.run(browser(tmp_path) + ["--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "</table>" in dom, "chromium rendered nothing"
    return dom, Page(dom)


def test_report_files_and_charts_have_data(report_dir):
    for f in ("report.md", "report.html", "throughput_vs_latency.png", "latency_per_token.png",
              "speedup_over_eager.png", "pruned_vs_dense.png"):
        assert (report_dir / f).stat().st_size > 1000, f
    counts = json.loads((report_dir / "chart_points.json").read_text())
    assert counts["throughput_vs_latency.png"] == 3 * 2 * 2 * 3  # models x backends x (in, out) panels x batches
    assert counts["pruned_vs_dense.png"] == 2 * 2 * 3 * 3  # (family, backend) rows x panels x family members x batches
    assert counts["latency_per_token.png"] == 3 * 2 * 2 and counts["speedup_over_eager.png"] == 3 * 2 * 3
    md = (report_dir / "report.md").read_text()
    assert "Speed-up over eager" in md and "Correctness" in md and "| tiny-llama-depth | ort |" in md
    assert "| model | dense parent | backend |" in md and "|:---|:---|:---|:---|---:|" in md  # text left, numbers right


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    dom, _ = render(report_dir / "report.html", tmp_path)
    assert 'data-charts-loaded="4/4"' in dom  # every chart image decoded in the browser
    shot = tmp_path / "shot.png"
    subprocess.run(browser(tmp_path) + [f"--screenshot={shot}", "--window-size=1200,1600",
                                        (report_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000


def test_browser_shows_pruned_vs_dense_with_speedups_from_the_results(report_dir, family_results, tmp_path):
    _, res = family_results
    _, page = render(report_dir / "report.html", tmp_path)
    pt = {(p.model, p.backend, p.input_len, p.batch): p for p in res.points}
    flagged = {id(f.point) for f in trust_flags(res.points)}  # CPU timings of 2 runs may be flagged

    def mark(*points) -> str:
        return " ⚑" if any(id(p) in flagged for p in points) else ""

    params = {m.label: m.params for m in res.models}
    rows = {(r["model"], r["backend"], r["in/out"]): r for r in page.table("pruned-vs-dense")}
    assert {m for m, _, _ in rows} == {"tiny-llama-depth", "tiny-llama-width"}  # the dense parent is not its own row
    for backend in ("eager", "ort"):
        row = rows[("tiny-llama-depth", backend, "6/4")]
        assert row["dense parent"] == "tiny-llama" and row["blocks"] == "4/6"
        assert row["parameters"] == f"{100 * params['tiny-llama-depth'] / params['tiny-llama']:.1f}%"
        dense, depth = pt[("tiny-llama", backend, 6, 1)], pt[("tiny-llama-depth", backend, 6, 1)]
        assert row["decode step M1"] == f"{dense.decode_step_ms / depth.decode_step_ms:.2f}x" + mark(dense, depth)
        for b in (1, 2, 4):
            pruned, dense = pt[("tiny-llama-depth", backend, 6, b)], pt[("tiny-llama", backend, 6, b)]
            want = dense.latency_p50_s / pruned.latency_p50_s  # throughputs at the median latency
            assert row[f"tokens/s M{b}"] == f"{want:.2f}x" + mark(dense, pruned)
    models = {r["model"]: r for r in page.table("models")}
    assert models["tiny-llama"]["role"] == "dense parent"
    assert models["tiny-llama-depth"]["role"] == "depth-pruned from tiny-llama"
    assert models["tiny-llama-width"]["role"] == "width-pruned from tiny-llama"
    assert models["tiny-llama-depth"]["blocks"] == "4"
    assert models["tiny-llama-depth"]["weights"] == f"{2 * params['tiny-llama-depth'] / 1e6:.2f} MB"  # fp16
    assert any(t.startswith("tiny-llama-depth (") and "on eager" in t for t in page.texts)  # the headline


def test_browser_shows_settings_floor_and_why_memory_is_empty(report_dir, tmp_path):
    _, page = render(report_dir / "report.html", tmp_path)
    settings = {r["setting"]: r["value"] for r in page.table("settings")}
    assert settings["dtype"] == "fp16"
    assert settings["warm-up runs per point"] == "1" and settings["timed runs per point"] == "2"
    assert settings["device"].startswith("CPU only") and "points timed on cpu" in settings["device"]
    assert "torch" in settings and settings["grid"] == "batch 1, 2, 4; input 6, 10; output 4 tokens"
    assert "floor" not in page.tables  # one sentence, not rows of empty cells
    assert ("No weight-streaming floor applies: these results' batch-1 points are on the CPU, and the floor is a GPU's "
            "memory bandwidth.") in page.texts
    assert all(r["peak mem GB"] == "" for r in page.table("sweep"))
    assert any("not measured on the CPU" in t for t in page.texts)


def test_nothing_timed_is_not_said_to_be_timed_on_the_cpu(tmp_path):
    failed = [Point(model="tiny-llama", backend="eager", device="cpu", batch=b, input_len=12, output_len=128,
                    status="error", message="RuntimeError: boom") for b in (1, 2)]
    html = report_from_results([_results(failed, env={"device": "CPU only"}).save(tmp_path / "r.json")],
                               tmp_path / "out")
    dom, page = render(html, tmp_path)
    assert {r["setting"]: r["value"] for r in page.table("settings")}["device"] == "CPU only"
    assert "timed on" not in dom
    assert "floor" not in page.tables and any(t.startswith("No weight-streaming floor applies") for t in page.texts)


def test_partial_results_say_so_at_the_top(tmp_path):
    part = _results([_point("tiny-llama", "eager", 1, 1.0)], partial=True).save(tmp_path / "results.partial.json")
    done = _results([_point("tiny-llama-depth", "eager", 1, 0.8)], models=("tiny-llama-depth",)).save(
        tmp_path / "done.json")
    dom, page = render(report_from_results([part, done], tmp_path / "out"), tmp_path)
    assert page.texts[0].startswith("Partial results: results.partial.json is from a sweep that did not finish")
    assert "done.json" not in page.texts[0] and "Points it had not reached are missing" in page.texts[0]
    assert dom.index("Partial results") < dom.index("What pruning buys")
    glance, = page.table("pruned-vs-dense")  # the dense model of one file against the pruned one of another
    assert glance["file"] == "done.json; dense: results.partial.json"
    assert any(t.startswith("A file column reading 'x.json; dense: y.json' compares points of two runs")
               for t in page.texts)


def test_settings_rows_appear_once_and_differences_per_file(family_results, tmp_path):
    path, res = family_results
    other = tmp_path / "later" / "results.json"
    res.model_copy(update={"env": {**res.env, "time": "2030-01-01T00:00:00Z"},
                           "config": res.config.model_copy(update={"repeats": 7})}).save(other)
    html = report_from_results([path, other], tmp_path / "out")
    _, page = render(html, tmp_path)
    rows = page.table("settings")
    names = [r["setting"] for r in rows]
    assert names.count("torch") == 1 and names.count("dtype") == 1
    values = {r["setting"]: r["value"] for r in rows}
    want = [f"{path.parent.name}/results.json: 2", "later/results.json: 7"]
    assert values["timed runs per point"].splitlines() == want
    assert "later/results.json: 2030-01-01T00:00:00Z" in values["started"]


def _synthetic(path: Path) -> Path:
    """A results file with one noisy point (p90 far above p50) and one batch slower than a larger batch."""
    lat = {1: (1.0, 1.0, 1.6), 2: (2.0, 2.0, 2.05), 4: (1.2, 1.2, 1.25)}  # batch: mean, p50, p90 (seconds)
    points = [Point(model="tiny-llama", backend="eager", device="cuda", batch=b, input_len=12, output_len=128,
                    status="ok", runs=3, warmup_runs=1, latency_mean_s=m, latency_p50_s=p50, latency_p90_s=p90,
                    throughput_tok_s=b * 128 / m, decode_step_ms=1e3 * m / 128, peak_mem_gb=1.0)
              for b, (m, p50, p90) in lat.items()]
    points.append(Point(model="tiny-llama", backend="trt", device="cuda", batch=1, input_len=12, output_len=128,
                        status="error", message="RuntimeError: engine rejected the profile"))
    spec = PRESETS["tiny-llama"].spec()
    res = BenchResults(env={"device": "NVIDIA Z9000"}, config=SweepConfig(batches=[1, 2, 4], inputs=[12], outputs=[128],
                                                                          warmup=1, repeats=3),
                       backends=["eager", "trt"], dtype="fp16", points=points,
                       models=[ModelRecord(label="tiny-llama", params=spec.param_count(), blocks=spec.num_layers)])
    return res.save(path)


def _point(model: str, backend: str, batch: int, mean: float, p50: float | None = None, p90: float | None = None,
           device: str = "cuda") -> Point:
    """An ok point of 12 input and 128 output tokens; p50 defaults to the mean, p90 to 1% above p50."""
    p50 = mean if p50 is None else p50
    return Point(model=model, backend=backend, device=device, batch=batch, input_len=12, output_len=128, status="ok",
                 runs=3, warmup_runs=1, latency_mean_s=mean, latency_p50_s=p50,
                 latency_p90_s=1.01 * p50 if p90 is None else p90, throughput_tok_s=batch * 128 / mean,
                 decode_step_ms=1e3 * mean / 128, peak_mem_gb=1.0 if device == "cuda" else None)


def _results(points: list[Point], models=("tiny-llama",), **kw) -> BenchResults:
    """A results file of ``points``, recording ``models`` (preset names) as a results file of format 1 would."""
    specs = [PRESETS[m].spec() for m in models]
    kw.setdefault("env", {"device": "NVIDIA H200"})
    return BenchResults(config=SweepConfig(batches=sorted({p.batch for p in points} or {1}), inputs=[12],
                                           outputs=[128], warmup=1, repeats=3),
                        backends=sorted({p.backend for p in points}), dtype="fp16", points=points,
                        models=[ModelRecord(label=m, params=s.param_count(), blocks=s.num_layers)
                                for m, s in zip(models, specs)], **kw)


def test_colliding_labels_keep_each_point_with_its_file(tmp_path):
    """The same model in two files: per-file labels and a file column; no flag or comparison pairs two files."""
    a = _results([_point("tiny-llama", "eager", 1, 1.0), _point("tiny-llama", "eager", 2, 2.0),
                  _point("tiny-llama-depth", "eager", 1, 0.8), _point("tiny-llama-depth", "eager", 2, 1.6)],
                 models=("tiny-llama", "tiny-llama-depth")).save(tmp_path / "a.json")
    # Merged by label, b's batch 4 (1.2 s) would make a's batch 2 (2 s) look inverted, and a's eager points would
    # give b's ort points a speed-up at batch 1.
    b = _results([_point("tiny-llama", "eager", 4, 1.2), _point("tiny-llama", "ort", 1, 0.5),
                  _point("tiny-llama", "ort", 4, 0.6)]).save(tmp_path / "b.json")
    c = _results([_point("tiny-llama-width", "eager", 1, 0.9)], models=("tiny-llama-width",)).save(tmp_path / "c.json")
    _, page = render(report_from_results([a, b, c], tmp_path / "out"), tmp_path)
    assert "tiny-llama is in 2 results files (a.json, b.json): its points are labelled \"tiny-llama [file]\" and " \
           "compared only with points of the same file." in page.texts
    sweep = page.table("sweep")
    assert {(r["model"], r["file"]) for r in sweep} == {
        ("tiny-llama [a.json]", "a.json"), ("tiny-llama [b.json]", "b.json"), ("tiny-llama-depth", "a.json"),
        ("tiny-llama-width", "c.json")}
    assert len(sweep) == 8
    assert page.table("trust") == []  # a's batch 2 is not compared with b's batch 4
    assert not any(t.startswith("A file column reading") for t in page.texts)  # depth and its dense are both in a
    speedup = page.table("speedup-over-eager")
    assert [(r["model"], r["file"], r["backend"], r["M4"]) for r in speedup] == [
        ("tiny-llama [b.json]", "b.json", "ort", "2.00")]
    assert "M1" not in speedup[0]  # b has no eager batch 1; a's is not taken
    glance, = page.table("pruned-vs-dense")
    assert (glance["model"], glance["dense parent"], glance["file"]) == ("tiny-llama-depth", "tiny-llama [a.json]",
                                                                          "a.json")
    models = {r["model"]: r for r in page.table("models")}
    assert models["tiny-llama [b.json]"]["role"] == "dense parent" and models["tiny-llama [b.json]"]["file"] == "b.json"
    assert models["tiny-llama-depth"]["role"] == "depth-pruned from tiny-llama [a.json]"
    # c.json has no tiny-llama: which of a's and b's would be its dense parent is not for the report to pick.
    assert models["tiny-llama-width"]["role"] == "not compared: its dense model is in other files only"


def _noisy_family(path: Path) -> Path:
    """tiny-llama and tiny-llama-depth on an H200: depth's batch 1 is noisy (p90 1397% above p50) on eager and ort,
    and one disturbed run moved depth's batch-2 mean far from its median."""
    pts = [_point("tiny-llama", "eager", 1, 1.0), _point("tiny-llama", "eager", 2, 1.2),
           _point("tiny-llama", "eager", 4, 1.6), _point("tiny-llama", "ort", 1, 0.5),
           _point("tiny-llama-depth", "eager", 1, 0.9, p50=0.7, p90=0.7 * 14.97),
           _point("tiny-llama-depth", "eager", 2, 1.3, p50=0.8), _point("tiny-llama-depth", "eager", 4, 1.2),
           _point("tiny-llama-depth", "ort", 1, 0.4, p50=0.4, p90=0.4 * 14.97)]
    return _results(pts, models=("tiny-llama", "tiny-llama-depth")).save(path)


def test_headline_quotes_medians_of_unflagged_points_only(tmp_path):
    html = report_from_results([_noisy_family(tmp_path / "noisy.json")], tmp_path / "out")
    _, page = render(html, tmp_path)
    eager = next(t for t in page.texts if t.startswith("tiny-llama-depth (") and "on eager" in t)
    # p50 ratios at batch 2 (1.2 / 0.8) and 4 (1.6 / 1.2); the mean would make batch 2 0.92x
    assert "throughput 1.33 to 1.50x the dense model's at batch 2 and 4" in eager
    assert "batch 1 left out: it rests on a flagged point" in eager
    assert "decode step" not in eager  # batch 1's comparison rests on the noisy point
    ort = next(t for t in page.texts if t.startswith("tiny-llama-depth (") and "on ort" in t)
    assert "no number quoted: every comparison (batch 1) rests on a flagged point" in ort
    assert "x the dense" not in ort
    assert any(t.startswith("Speed-ups and comparisons on this page use the median (p50) latency") for t in page.texts)
    assert any("Speed-ups and comparisons use p50." in t for t in page.texts)  # the settings' note


def test_flagged_points_are_marked_in_every_table_and_hollow_in_charts(tmp_path):
    html = report_from_results([_noisy_family(tmp_path / "noisy.json")], tmp_path / "out")
    dom, page = render(html, tmp_path)
    footnote = "⚑: it rests on a flagged point; see 'Can I trust the numbers?'."
    sweep = {(r["model"], r["backend"], r["batch"]): r["note"] for r in page.table("sweep")}
    assert sweep[("tiny-llama-depth", "eager", "1")] == "⚑ large spread"
    assert sweep[("tiny-llama-depth", "eager", "2")] == "" and sweep[("tiny-llama", "eager", "1")] == ""
    glance = {r["backend"]: r for r in page.table("pruned-vs-dense")}
    assert glance["eager"]["decode step M1"].endswith("x ⚑") and glance["eager"]["tokens/s M1"].endswith("x ⚑")
    assert glance["eager"]["tokens/s M2"] == "1.50x" and glance["ort"]["tokens/s M1"].endswith("x ⚑")
    detail = {(r["backend"], r["batch"]): r for r in page.table("pruned-vs-dense-detail")}
    assert detail[("eager", "1")]["speed-up"].endswith("x ⚑")
    assert detail[("eager", "1")]["step speed-up"].endswith("x ⚑")
    assert detail[("eager", "1")]["note"] == "⚑ pruned: large spread"
    assert "⚑" not in detail[("eager", "2")]["speed-up"] + detail[("eager", "2")]["note"]
    speedup = {r["model"]: r["M1"] for r in page.table("speedup-over-eager")}
    assert speedup == {"tiny-llama": "2.00", "tiny-llama-depth": "1.75 ⚑"}  # eager 0.7 s / ort 0.4 s (p50)
    floor = {(r["model"], r["backend"]): r for r in page.table("floor")}
    assert floor[("tiny-llama-depth", "eager")]["decode step ms (M1)"].endswith(" ⚑")
    assert floor[("tiny-llama-depth", "eager")]["note"] == "⚑ large spread"
    assert "⚑" not in floor[("tiny-llama", "eager")]["decode step ms (M1)"]
    assert page.texts.count(footnote) == 4  # under the glance, detail, speed-up and floor tables
    assert "⚑: a flagged point; see 'Can I trust the numbers?'." in page.texts  # under the sweep
    hollow = {t.split(". ")[0]: t.split(". ")[1].split(" (")[0] for t in page.texts if "Hollow markers" in t}
    two, one = "Hollow markers: 2 flagged", "Hollow markers: 1 flagged"
    assert hollow == {"Throughput against median latency (one point per batch size)": two,
                      "Pruned variants against the dense model: throughput against median latency": two,
                      "Speed-up over PyTorch eager by batch size": one}  # eager/ort of a flagged model at batch 1
    assert "data-hollow=\"2\"" in dom


def test_step_sweep_flags_a_jump_in_ms_per_token(tmp_path):
    ms = {16: 0.30, 32: 0.20, 64: 0.50, 128: 0.45}  # 64 jumps 150% above 32; 128 falls again
    steps = [StepRow(model="tiny-llama", backend="eager", device="cuda", tokens=n, past=64, status="ok",
                     step_ms=n * v, ms_per_token=v) for n, v in ms.items()]
    res = _results([_point("tiny-llama", "eager", 1, 1.0)], step_sweep=steps)
    dom, page = render(report_from_results([res.save(tmp_path / "r.json")], tmp_path / "out"), tmp_path)
    rows = {r["tokens/step"]: r for r in page.table("step-sweep")}
    assert rows["64"]["note"] == "⚑ ms/token 150% above 32 tokens' (0.2 ms)"
    assert rows["64"]["ms/token"] == "0.500 ⚑"
    assert [rows[n]["note"] for n in ("16", "32", "128")] == ["", "", ""]
    assert any(t.startswith("⚑: ms/token more than 5% above the previous (smaller) tokens per step") for t in page.texts)
    assert "1 step-sweep row is flagged: ms/token jumps above the previous (smaller) tokens per step; see 'Step " \
           "sweep'." in page.texts
    assert any(t.startswith("Latency per token against tokens per step. Hollow markers: 1 flagged") for t in page.texts)


def test_browser_flags_spread_and_inverted_latency(tmp_path):
    html = report_from_results([_synthetic(tmp_path / "synthetic.json")], tmp_path / "out")
    _, page = render(html, tmp_path)
    flags = {(r["batch"], r["flag"]): r for r in page.table("trust")}
    assert set(flags) == {("1", "large spread"), ("2", "latency falls as batch grows")}
    assert flags[("2", "latency falls as batch grows")]["numbers"] == "batch 2 takes 2 s, batch 4 only 1.2 s (p50)"
    assert "more timed runs" in flags[("1", "large spread")]["what to do"]
    assert "quieter machine" in flags[("1", "large spread")]["what to do"]
    sweep = {(r["backend"], r["batch"]): r for r in page.table("sweep")}
    assert sweep[("eager", "1")]["note"] == "⚑ large spread" and sweep[("eager", "4")]["note"] == ""
    assert sweep[("trt", "1")]["status"] == "error: RuntimeError: engine rejected the profile"
    assert "floor" not in page.tables
    assert ("No weight-streaming floor could be computed for any batch-1 decode step: bandwidth unknown for NVIDIA "
            "Z9000 (2 points).") in page.texts
    assert any("only the dense model of this family" in t for t in page.texts)


def test_h200_results_show_floor_percent_and_flag_llmpruner(tmp_path):
    src = H200 / "quick-llama-7b-llmpruner.json"
    res = BenchResults.load(src)
    html = report_from_results([src], tmp_path / "out")
    _, page = render(html, tmp_path)
    weights = PRESETS["llama-7b-llmpruner"].spec().weight_bytes(2)
    floor = {r["backend"]: r for r in page.table("floor")}
    for backend in ("eager", "ort"):
        step = next(p for p in res.points if p.backend == backend and p.batch == 1).decode_step_ms
        pct = 100 * (1e3 * weights / 4800e9) / step
        assert floor[backend]["of the floor"] == f"{pct:.1f}% of 4,800 GB/s"
        assert floor[backend]["GPU bandwidth (datasheet)"] == "H200, 4,800 GB/s"
        assert floor[backend]["weights"] == f"{weights / 1e9:.2f} GB"
    assert floor["trt"]["note"].startswith("not timed: skipped")
    flags = {(r["backend"], r["batch"], r["flag"]): r for r in page.table("trust")}
    inverted = flags[("ort", "16", "latency falls as batch grows")]
    assert inverted["numbers"] == "batch 16 takes 2.61 s, batch 64 only 1.82 s (p50)"
    assert ("eager", "16", "latency falls as batch grows") in flags
    models = {r["model"]: r for r in page.table("models")}
    assert models["llama-7b-llmpruner"]["role"] == "no dense member in these results"
    assert models["llama-7b-llmpruner"]["facts from"].startswith("preset registry")
    assert any("no dense member" in t for t in page.texts)


def test_families_come_from_specs_not_names():
    from trtllm_kit.bench.sweep import family_of

    def facts(label, preset):
        spec = PRESETS[preset].spec()
        return ModelFacts(label, spec.param_count(), spec.num_layers, spec.weight_bytes(), family_of(spec),
                          spec.hidden_size, spec.layers, spec.source_layers)

    models = {m.label: m for m in (facts("llama-big", "tiny-llama-depth"), facts("small", "tiny-llama"),
                                   facts("x", "tiny-llama-width"), facts("tiny-llama-2", "small-llama"))}
    fams = {f.dense: f for f in families(models)}
    assert fams["small"].members == ("small", "x", "llama-big")  # the dense one is named "small"
    assert fams["small"].pruned == ("x", "llama-big")
    assert fams["tiny-llama-2"].members == ("tiny-llama-2",)  # a name alike, another family


def test_depth_pruned_alone_is_not_taken_for_dense():
    from trtllm_kit.report.data import facts_from_record

    spec = PRESETS["llama-7b-depth-27"].spec()
    fam, = families({"d": facts_from_record(ModelRecord(label="llama-7b-depth-27", params=spec.param_count(),
                                                        blocks=spec.num_layers), "fp16")})
    assert fam.dense is None and "no dense member" in fam.note


@pytest.mark.parametrize("name, gpu, gbps", [("NVIDIA H200", "H200", 4800), ("NVIDIA H100 80GB HBM3", "H100 SXM", 3350),
                                             ("NVIDIA H100 PCIe", "H100 PCIe", 2000),
                                             ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 2039),
                                             ("NVIDIA A100-SXM4-40GB", "A100 40GB", 1555), ("NVIDIA L4", "L4", 300),
                                             ("NVIDIA L40S", "L40S", 864), ("NVIDIA A10", "A10", 600),
                                             ("NVIDIA GeForce RTX 4090", "RTX 4090", 1008),
                                             ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 960),
                                             ("NVIDIA B200", "B200", 8000)])
def test_bandwidth_table_matches_torch_device_names(name, gpu, gbps):
    assert bandwidth_of(name) == (gpu, gbps)


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA L40", "NVIDIA H100 NVL", "CPU only", None])
def test_unknown_gpus_have_no_bandwidth(name):
    assert bandwidth_of(name) is None


def test_point_labels_do_not_overlap(tmp_path):
    """Labels of points close together (as M1/M16/M64 of several models are) end up apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trtllm_kit.report.charts import label_points

    fig, ax = plt.subplots(figsize=(6, 4.8))
    xs = [2.0, 2.02, 2.04, 2.01, 2.03, 3.0]
    ys = [60, 62, 64, 61, 63, 4000]
    ax.plot(xs, ys, "o")
    ax.set_yscale("log", base=2)
    fig.tight_layout()
    texts = label_points(ax, xs, ys, ["M1", "M16", "M64", "M1", "M16", "M256"])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_terminal_summary_gives_every_reason(tmp_path):
    res = BenchResults.load(_synthetic(tmp_path / "s.json"))
    lines = summary_lines(res)
    table = "\n".join(lines)
    assert "error [1]" in table  # the cell points at its reason...
    assert "  [1] tiny-llama / trt (M1): error: RuntimeError: engine rejected the profile" in lines  # ...given below
    assert any("look noisy" in ln for ln in lines)


def test_report_cli_and_bad_input(family_results, tmp_path):
    path, _ = family_results
    out = tmp_path / "r2"
    cli("report", str(path), "--out", str(out), check=True)
    assert (out / "report.html").is_file()
    assert_one_line_error(cli("report", str(tmp_path / "none.json"), "--out", str(tmp_path / "r3")), "does not exist")
    assert not (tmp_path / "r3").exists()


def test_report_of_no_points_fails_with_one_line(tmp_path):
    empty = _results([]).save(tmp_path / "empty.json")
    proc = cli("report", str(empty), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert_one_line_error(proc, f"{empty} has no timed points")
    other = _results([], partial=True).save(tmp_path / "results.partial.json")
    assert_one_line_error(cli("report", str(empty), str(other), "--out", str(tmp_path / "out")),
                          f"{empty} and {other} have no timed points")

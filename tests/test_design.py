"""Unit tests of the design's pieces that need no TensorRT: limits and profiles, KV layouts, manifests,
the backend registry. (Engine builds are in test_engine.py.)"""

import json

import pytest
import torch

from trtllm_kit.bench.backends import BACKENDS, get_backend, parse_backends
from trtllm_kit.engine.kv_layouts import KV_LAYOUTS, get_layout
from trtllm_kit.engine.limits import DEFAULT_LIMITS, EngineLimits, limits_for_sweep, select_profile, sweep_profiles
from trtllm_kit.engine.manifest import BuildOptions
from trtllm_kit.errors import ProfileError, ToolkitError
from trtllm_kit.export.io_spec import ATTENTION_MASK, WRITE_INDICES, model_inputs, static_cache_inputs
from trtllm_kit.models import load_model


def test_one_limit_policy_for_build_and_bench():
    from trtllm_kit.bench.results import SweepConfig

    assert SweepConfig().limits() == DEFAULT_LIMITS  # `build`'s defaults are the paper sweep's needs
    assert (DEFAULT_LIMITS.max_batch, DEFAULT_LIMITS.max_input, DEFAULT_LIMITS.max_seq) == (384, 82, 594)
    lim = limits_for_sweep([1, 16, 64, 256], [12], [128], step_tokens=[16, 512], step_past=64)
    assert (lim.max_batch, lim.max_input, lim.max_seq, lim.opt_batch, lim.opt_input) == (512, 64, 140, 16, 12)
    with pytest.raises(ToolkitError, match="--max-seq 8 must exceed --max-input 8"):
        EngineLimits(4, 8, 8).checked()
    with pytest.raises(ProfileError, match=r"rebuild with --max-batch 5"):
        EngineLimits(4, 8, 16).check_point(5, 8, 8)


@pytest.mark.parametrize("static", [False, True])
def test_profiles_cover_prefill_and_decode(static):
    lim = EngineLimits(8, 32, 96).checked()
    pre, dec = sweep_profiles(lim, "split", static_cache=static)
    assert select_profile([pre, dec], 8, 32, 0) == 0
    # a decode step runs on the decode profile, also with a static cache where the prefill profile covers it too
    assert select_profile([pre, dec], 1, 1, 0 if static else 95) == 1
    assert select_profile([pre, dec], 8, 2, 0) == 0
    assert dec.max["past_sequence_length"] == (0 if static else 95)
    (one,) = sweep_profiles(lim, "single", static_cache=static)
    assert one.covers(8, 32, 0) and one.covers(1, 1, 0 if static else 95)
    with pytest.raises(ProfileError):
        select_profile([pre, dec], 9, 1, 0)


def test_kv_layouts_own_their_inputs_and_records():
    spec, _ = load_model("tiny-llama-width")
    lim = EngineLimits(4, 8, 24).checked()
    assert set(KV_LAYOUTS) == {"portable", "portable-static", "inplace", "plugin"}
    portable, plugin = get_layout("portable"), get_layout("plugin")
    assert [t.name for t in portable.engine_inputs(spec, lim)] == [t.name for t in model_inputs(spec)]
    static = plugin.engine_inputs(spec, lim)
    assert static == static_cache_inputs(spec, lim.max_seq) and any(t.name == WRITE_INDICES for t in static)
    rec = plugin.record(lim, None)
    assert rec.static_cache and rec.max_seq == 24 and rec.name == "plugin"
    assert portable.record(lim, None).max_seq is None
    with pytest.raises(ToolkitError, match="unknown --kv-mode"):
        get_layout("paged")


def test_static_layout_feeds_fixed_buffers_for_decode():
    spec, _ = load_model("tiny-llama")
    lim = EngineLimits(2, 8, 16).checked()
    layout = get_layout("inplace")
    dtypes = {"input_ids": torch.int32, "position_ids": torch.int32, ATTENTION_MASK: torch.int32,
              WRITE_INDICES: torch.int32, "past_key_values.0.key": torch.float16}
    cache = layout.new_cache(spec, 2, 10, lim, dtypes, torch.device("cpu"))
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    feeds = layout.feeds(cache, torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), mask[:, :3], 0,
                         dtypes)
    assert feeds[ATTENTION_MASK].shape == (2, 16) and feeds[ATTENTION_MASK][0, :3].tolist() == [0, 1, 1]
    dec = layout.feeds(cache, torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), mask, 3, dtypes)
    assert dec["input_ids"].data_ptr() == cache.ids.data_ptr() and dec[WRITE_INDICES].tolist() == [3, 3]
    assert dec[ATTENTION_MASK][:, 3].tolist() == [1, 1] and dec[ATTENTION_MASK][:, 4:].sum() == 0
    views = list(cache.views(1))
    assert all(v.past.data_ptr() == v.present.data_ptr() for v in views) and len(views) == 2 * spec.num_layers


def test_ping_pong_cache_present_becomes_past():
    from trtllm_kit.runtime.kv_cache import PingPongCache

    spec, _ = load_model("tiny-llama-width")
    cache = PingPongCache(spec, 2, 10, torch.float32, torch.device("cpu"))
    first = {v.present_name: v.present for v in cache.views(4)}
    for v in first.values():
        v.fill_(1.0)
    cache.advance(4)
    for v in cache.views(1):
        assert v.past.shape[2] == 4 and torch.equal(v.past, first[v.present_name])
        assert v.present.shape[2] == 5


def test_manifests_check_their_format_and_say_what_to_do(tmp_path):
    from trtllm_kit.bench.results import BenchResults
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.export.manifest import ExportManifest

    for cls in (ExportManifest, EngineManifest, BenchResults):
        d = tmp_path / cls.__name__
        d.mkdir()
        (d / cls.FILE).write_text(json.dumps({"format": "trtllm-kit-something/0"}))
        with pytest.raises(ToolkitError, match=r"this trtllm-kit reads .* \(it was written by another version"):
            cls.load(d)
        (d / cls.FILE).write_text(json.dumps({"format": cls.FORMAT}))
        with pytest.raises(ToolkitError, match=r"field .*: Field required"):
            cls.load(d)
        with pytest.raises(ToolkitError, match="does not exist"):
            cls.load(tmp_path / "missing")


def test_backend_registry():
    assert set(BACKENDS) >= {"eager", "ort", "trt", "compiled"}
    assert parse_backends("trt, eager,ort,eager") == ["eager", "ort", "trt"]  # eager first: the reference
    assert get_backend("trt").check("fp16", "cpu") == "no GPU to run it"
    assert get_backend("ort").check("bf16", "cpu").startswith("ONNX Runtime has no bf16 kernels")
    assert get_backend("eager").needs == ("weights",) and get_backend("trt").needs == ("engine",)
    with pytest.raises(ToolkitError, match="unknown backend 'tensorrt'"):
        parse_backends("tensorrt")


def test_build_options_fingerprint_ignores_what_only_speeds_the_build():
    a = BuildOptions(limits=EngineLimits(8, 32, 64), timing_cache="/tmp/a.cache")
    b = BuildOptions(limits=EngineLimits(8, 32, 64))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != BuildOptions(limits=EngineLimits(8, 32, 65)).fingerprint()


def test_a_build_with_no_implementation_says_what_to_change(monkeypatch):
    """TensorRT 8.6's "Could not find any implementation" (llama-7b, one profile, H200) names the flags to change."""
    from trtllm_kit.engine.builder import _build_failure_hint
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions

    detail = "10: Could not find any implementation for node {ForeignNode[c_zero...logits/node]}."
    single = _build_failure_hint(detail, BuildOptions(limits=EngineLimits(256, 128, 640), profiles="single",
                                                      workspace_gb=4))
    assert "--profiles split" in single and "--workspace than 4 GB" in single and "--max-batch" in single
    split = _build_failure_hint(detail, BuildOptions(limits=EngineLimits(256, 128, 640)))
    assert "--profiles split" not in split and "--max-batch" in split
    assert _build_failure_hint("some other failure", BuildOptions(limits=EngineLimits(8, 32, 64))) is None
    # H200, 2026-11-30: the same failure (and TensorRT's OutOfMemory) while other processes held the GPU
    oom = "2: [virtualMemoryBuffer.cpp::resizePhysical::145] Error Code 2: OutOfMemory (no further information)"
    busy = _build_failure_hint(oom, BuildOptions(limits=EngineLimits(256, 128, 640)), (30 * 10**9, 150 * 10**9))
    assert "30 of 150 GB of the GPU free" in busy and busy.index("an idle GPU") < busy.index("--max-batch")
    idle = _build_failure_hint(detail, BuildOptions(limits=EngineLimits(256, 128, 640)), (140 * 10**9, 150 * 10**9))
    assert "idle GPU" not in idle and "140 of 150 GB" in idle
    # H200, 2026-11-30: the portable layout's whole-graph region built at 7B once the norm plugin cut it
    # (only where the plugin library loads: not on TensorRT-RTX, not without nvcc or the TensorRT headers)
    from trtllm_kit.engine import builder
    from trtllm_kit.engine.flavors import resolve_flavor

    lim = BuildOptions(limits=EngineLimits(256, 128, 640))
    assert builder.plugin_library_unavailable(resolve_flavor("tensorrt-rtx", None), lim) is not None
    monkeypatch.setattr(builder, "plugin_library_unavailable", lambda flavor, options: None)  # 8.6, nvcc, headers
    portable = _build_failure_hint(detail, lim, layout="portable", norm="trt", flavor="8.6")
    assert portable.index("--norm plugin") < portable.index("--max-batch")
    assert "--norm plugin" not in _build_failure_hint(detail, lim, layout="portable", norm="plugin", flavor="8.6")
    monkeypatch.setattr(builder, "plugin_library_unavailable", lambda flavor, options: "no nvcc")
    assert "--norm plugin" not in _build_failure_hint(detail, lim, layout="portable", norm="trt", flavor="rtx")


def test_build_stage_reads_tensorrt_86_timing_lines():
    """The heartbeat of a long 8.6 build says which profile (TensorRT's index, as inspect numbers them) and which
    fused graph (lines as 8.6 logs them)."""
    from trtllm_kit.engine.build_log import build_stage

    myelin = ("--------------- Timing Runner: {ForeignNode[c_zero + (Unnamed Layer* 43) [Shuffle]...logits/node]} "
              "[profile 1] (Myelin[0x80000023])")
    assert build_stage(myelin) == "profile 1: Myelin compiling {ForeignNode[c_zero + (Unnamed Layer* 43) [Shuffle]...logits/node]}"
    assert build_stage("--------------- Timing Runner: kv_attention.0 (PluginV2[0x80000019])") == \
        "profile 0: timing kv_attention.0 (PluginV2)"
    assert build_stage("--------------- Timing Runner: [ShapeHostToDeviceCopy 0] [profile 1] "
                       "(ShapeHostToDevice[0x80000024])") == "profile 1: timing [ShapeHostToDeviceCopy 0] (ShapeHostToDevice)"
    assert build_stage("Local timing cache in use. Profiling results in this builder pass will not be stored.") is None


def test_profile_phases_split_tensorrt_build_time_by_profile():
    """engine.json's build phases say how long each profile took (the 7B question: is one profile's Myelin
    compile the build?), from the lines TensorRT 8.6 logs (llama-7b@8 on the H200: profile 0 from 27.4 s,
    profile 1 from 103.8 s, plan written at 172.6 s), and nothing when it logs none."""
    from trtllm_kit.engine.build_log import _PROFILE, profile_phases

    assert _PROFILE.match("Constructing optimization profile number 1 [2/2].").group(1) == "1"
    marks = {"profile 0": 27.4, "profile 1": 103.8}
    assert profile_phases(marks, 172.6) == {"TensorRT profile 0 (tactics, Myelin)": 76.4,
                                            "TensorRT profile 1 (tactics, Myelin)": 68.8}
    assert profile_phases({}, 9.0) == {}


def test_logger_notices_that_myelin_keeps_its_timing_to_itself():
    """8.6's message on every llama-7b build (H200): the shared timing cache does not reach the Myelin graph,
    which engine.json's timing_cache_note then says."""
    trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is part of the default install")
    from trtllm_kit.engine.build_log import collecting_logger

    logger = collecting_logger(trt)
    logger.log(trt.ILogger.Severity.INFO, "Detected 19 inputs and 17 output network tensors.")
    assert not logger.local_timing_cache
    logger.log(trt.ILogger.Severity.INFO,
               "Local timing cache in use. Profiling results in this builder pass will not be stored.")
    assert logger.local_timing_cache


def test_a_timing_cache_tensorrt_refused_is_neither_claimed_nor_overwritten():
    """What TensorRT 8.6 logged on the H200 when llama-7b-depth-27's build was handed llama-7b's timing cache (fifteenth
    session, ``2026-12-01-values-transposed/logs/d.log``): two errors that do not stop the build. engine.json then
    says the file was refused and left as it was (not "reused and updated"), and the build does not write it."""
    trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is part of the default install")
    from trtllm_kit.engine.build_log import collecting_logger, timing_cache_outcome

    note = "reused and updated: /w/timing.cache"
    logger = collecting_logger(trt)
    logger.log(trt.ILogger.Severity.INFO,
               "Local timing cache in use. Profiling results in this builder pass will not be stored.")
    write, said = timing_cache_outcome(note, "/w/timing.cache", logger)
    assert write and said.startswith(note) and "local cache" in said
    logger.log(trt.ILogger.Severity.ERROR, "1: [myelinCache.h::deserializeFromBuffer::52] Error Code 1: Myelin "
               "(Myelin error from unknown graph)")
    assert not logger.timing_cache_rejected
    logger.log(trt.ILogger.Severity.ERROR, "4: The timing cache will not be used!")
    write, said = timing_cache_outcome(note, "/w/timing.cache", logger)
    assert not write and said.startswith("rejected by TensorRT, not used, and left as it was: /w/timing.cache")
    assert timing_cache_outcome("created: /w/new.cache", "/w/new.cache", collecting_logger(trt)) == \
        (True, "created: /w/new.cache")


def test_engines_the_runners_would_feed_wrongly_are_refused_in_one_line():
    """What the H200 showed (TensorRT 8.6 plugin engines: fp32 present.* bound onto fp16 caches, read back as
    values within ±512) and what would read device pointers as host memory (shape-tensor inputs) are refused
    before a step runs. The engine here is a stand-in with the four ICudaEngine calls the check makes."""
    from types import SimpleNamespace

    from trtllm_kit.engine.loading import check_bindable

    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"))

    class Engine:
        def __init__(self, dtypes: dict, shape_inputs=()):
            self.dtypes, self.names, self.shape_inputs = dtypes, list(dtypes), set(shape_inputs)
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, n):
            return "out" if n.startswith(("present.", "logits")) else "in"

        def get_tensor_dtype(self, n):
            return self.dtypes[n]

        def is_shape_inference_io(self, n):
            return n in self.shape_inputs

    good = {"write_indices": "INT32", "past_key_values.0.key": "HALF", "present.0.key": "HALF", "logits": "HALF"}
    check_bindable(trt, Engine(good), same_cache_dtype=True)
    with pytest.raises(ToolkitError, match="present.0.key is FLOAT but past_key_values.0.key is HALF"):
        check_bindable(trt, Engine({**good, "present.0.key": "FLOAT"}), same_cache_dtype=True)
    check_bindable(trt, Engine({**good, "present.0.key": "FLOAT"}), same_cache_dtype=False)  # portable: a fresh present
    with pytest.raises(ToolkitError, match="write_indices are shape tensors"):
        check_bindable(trt, Engine(good, shape_inputs=["write_indices"]), same_cache_dtype=True)


def test_layer_information_is_standard_json():
    """TensorRT 8.6's inspector text holds raw 0x1e separators (H200, 2026-11-30: Python's json refused every
    8.6 layers.json); what the builder writes parses strictly and keeps them."""
    import json

    from trtllm_kit.engine.builder import layer_info_json

    raw = ('{"Layers": [{"Name": "Transpose_71/node + Reshape_72/node", "LayerType": "Shuffle", '
           '"Metadata": "[ONNX Layer: Transpose_71/node]\x1e[ONNX Layer: Reshape_72/node]"}], "Bindings": ["logits"]}')
    with pytest.raises(ValueError):
        json.loads(raw)
    data = json.loads(layer_info_json(raw))
    assert data["Layers"][0]["Metadata"].split("\x1e") == ["[ONNX Layer: Transpose_71/node]",
                                                          "[ONNX Layer: Reshape_72/node]"]
    assert json.loads(layer_info_json("not json at all")) == {"raw": "not json at all"}

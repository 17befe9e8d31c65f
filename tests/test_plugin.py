"""CPU tests of the KV-cache attention plugin's build side: finding headers and nvcc, compiling, caching."""

import shutil
import subprocess
import time
import types
from pathlib import Path

import pytest

from trtllm_kit.engine import plugin
from trtllm_kit.engine.plugin import PluginUnavailable
from trtllm_kit.errors import ToolkitError

TRT86_INCLUDE = Path("/work/shared/hooks/trt86/include")


def fake_trt(tmp_path: Path, version: str = "8.6.0") -> types.SimpleNamespace:
    """Stands in for the imported tensorrt module: only __version__ and __file__ are read."""
    pkg = tmp_path / "site-packages" / "tensorrt"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    return types.SimpleNamespace(__version__=version, __file__=str(pkg / "__init__.py"))


def write_headers(inc: Path, major: int, via_macro: bool = False) -> Path:
    inc.mkdir(parents=True, exist_ok=True)
    (inc / "NvInfer.h").write_text("// stub\n")
    if via_macro:  # TensorRT 10+ spells it through another macro
        text = f"#define TRT_MAJOR_ENTERPRISE {major}\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE //!< major\n"
    else:
        text = f"#define NV_TENSORRT_MAJOR {major} //!< major\n"
    (inc / "NvInferVersion.h").write_text(text + "#define NV_TENSORRT_MINOR 6\n#define NV_TENSORRT_PATCH 0\n")
    return inc


def assert_one_sentence(err: Exception, *needles: str) -> None:
    msg = str(err)
    assert isinstance(err, ToolkitError)
    assert "\n" not in msg and ". " not in msg, msg
    for n in needles:
        assert n in msg, msg


@pytest.fixture
def no_system_headers(monkeypatch):
    monkeypatch.setattr(plugin, "SYSTEM_INCLUDE_DIRS", ())
    monkeypatch.delenv("TRT_INCLUDE_DIR", raising=False)


def test_include_empty_dir_is_one_sentence(tmp_path, no_system_headers):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_trt_include(fake_trt(tmp_path), explicit=empty)
    assert_one_sentence(e.value, "--trt-include", "TRT_INCLUDE_DIR", "--kv-mode portable", str(empty))


def test_include_other_major_version_is_refused(tmp_path, no_system_headers, monkeypatch):
    inc = write_headers(tmp_path / "trt10" / "include", 10, via_macro=True)
    monkeypatch.setenv("TRT_INCLUDE_DIR", str(inc))
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_trt_include(fake_trt(tmp_path, "8.6.0"))
    assert_one_sentence(e.value, "--trt-include", "--kv-mode portable", "TensorRT 10.6.0 headers")


def test_include_found_next_to_module_and_via_macro(tmp_path, no_system_headers):
    trt = fake_trt(tmp_path, "10.3.0")
    inc = write_headers(Path(trt.__file__).parent / "include", 10, via_macro=True)
    assert plugin.find_trt_include(trt) == inc
    assert plugin.header_version(inc) == (10, 6, 0)


def test_missing_nvcc_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(plugin, "NVCC_DIRS", (tmp_path / "cuda" / "bin",))
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_nvcc()
    assert_one_sentence(e.value, "nvcc", "--kv-mode portable")


def test_nvcc_failure_reports_its_errors(tmp_path, monkeypatch):
    """A broken compiler's stderr reaches the user, and nothing half-written stays in the cache."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvcc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'release 0.0' && exit 0\n"
                    "echo 'kv_cache_attention.cu(1): error: something broke' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    inc = write_headers(tmp_path / "inc", 8)
    cache = tmp_path / "cache"
    with pytest.raises(PluginUnavailable) as e:
        plugin.compile_plugin_library(inc, "8.6.0", "sm_90", cache_dir=cache, log=lambda s: None)
    assert "something broke" in str(e.value) and "--kv-mode portable" in str(e.value)
    assert not list(cache.rglob("*.so")), list(cache.rglob("*"))


def _exports(so: Path) -> str:
    if shutil.which("nm"):
        return subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True, check=True).stdout
    return so.read_bytes().decode("latin-1")


def _needed(so: Path) -> str:
    if shutil.which("readelf"):
        return subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    return so.read_bytes().decode("latin-1")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.skipif(not (TRT86_INCLUDE / "NvInferVersion.h").is_file(), reason=f"no TensorRT 8.6 headers in {TRT86_INCLUDE}")
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed for the stand-in libnvinfer")
def test_compile_exports_info_links_nvinfer_and_caches(tmp_path):
    # A stand-in libnvinfer.so.8 (soname only matters) so the link step runs as it does with TensorRT.
    stub = tmp_path / "lib" / "libnvinfer.so.8"
    stub.parent.mkdir()
    (tmp_path / "stub.cpp").write_text('extern "C" void* getPluginRegistry() noexcept { return nullptr; }\n')
    subprocess.run(["g++", "-shared", "-fPIC", "-Wl,-soname,libnvinfer.so.8", str(tmp_path / "stub.cpp"), "-o",
                    str(stub)], check=True)
    lines: list[str] = []
    cache = tmp_path / "cache"
    lib = plugin.compile_plugin_library(TRT86_INCLUDE, "8.6.0", "sm_90", nvinfer=stub, cache_dir=cache,
                                        log=lines.append)
    assert lib.path.is_file() and lib.path.name == plugin.LIBRARY_NAME and lib.path.parent.parent == cache
    assert len(lines) == 1 and "sm_90" in lines[0] and " s: " in lines[0], lines
    assert lib.arch == "sm_90" and lib.trt_version == "8.6.0"
    assert lib.source_sha256 == plugin.source_sha256() and len(lib.sha256) == 64
    exports = _exports(lib.path)
    assert "trtllmKitPluginInfo" in exports
    assert "libnvinfer.so.8" in _needed(lib.path)
    assert not [p for p in lib.path.parent.iterdir() if p.name != plugin.LIBRARY_NAME]  # no temp files left

    start = time.perf_counter()
    again = plugin.compile_plugin_library(TRT86_INCLUDE, "8.6.0", "90", nvinfer=stub, cache_dir=cache,
                                          log=lines.append)
    assert time.perf_counter() - start < 2.0
    assert again == lib and len(lines) == 1, "the second call recompiled instead of reusing the cache"


def _cublaslt_or_none():
    try:
        return plugin.find_cublaslt()
    except PluginUnavailable:
        return None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.skipif(not (TRT86_INCLUDE / "NvInferVersion.h").is_file(), reason=f"no TensorRT 8.6 headers in {TRT86_INCLUDE}")
@pytest.mark.skipif(_cublaslt_or_none() is None, reason="no cuBLASLt (CUDA toolkit or nvidia-cublas wheel)")
def test_compile_with_gemm_links_cublaslt_with_a_run_path(tmp_path):
    found = plugin.find_cublaslt()
    lib = plugin.compile_plugin_library(TRT86_INCLUDE, "8.6.0", "sm_90", cache_dir=tmp_path, log=lambda _: None,
                                        cublaslt=found)
    assert lib.gemm and lib.source_sha256 == plugin.source_sha256(gemm=True) != plugin.source_sha256()
    needed = _needed(lib.path)
    assert found.library.name in needed and str(found.library.parent) in needed  # NEEDED + RUNPATH
    exports = _exports(lib.path)
    assert "trtllmKitGemmCublasLtVersion" in exports and "trtllmKitPluginInfo" in exports
    plain = plugin.compile_plugin_library(TRT86_INCLUDE, "8.6.0", "sm_90", cache_dir=tmp_path, log=lambda _: None)
    assert plain.path != lib.path and "cublasLt" not in _needed(plain.path)


def _fake_cublaslt(root: Path, *majors: int) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "include" / "cublasLt.h").write_text("// stub\n")
    (root / "lib").mkdir()
    for m in majors:
        (root / "lib" / f"libcublasLt.so.{m}").write_text("")
        (root / "lib" / f"libcublasLt.so.{m}.1.2").write_text("")
    return root


@pytest.fixture
def stub_cublaslt_check(monkeypatch):
    """Accept the stub files ``_fake_cublaslt`` writes (the real check loads the library: no cuBLAS in CI)."""
    monkeypatch.setattr(plugin, "_usable_cublaslt", lambda include, library: None)


def test_cublaslt_found_in_the_first_root_that_has_header_and_library(tmp_path, stub_cublaslt_check):
    only_header = _fake_cublaslt(tmp_path / "a")
    both = _fake_cublaslt(tmp_path / "b", 12, 13)
    found = plugin.find_cublaslt([tmp_path / "missing", only_header, both])
    assert found.include == both / "include" and found.library == both / "lib" / "libcublasLt.so.13"


def test_cublaslt_of_nvccs_major_preferred_and_paths_absolute(tmp_path, stub_cublaslt_check, monkeypatch):
    cuda13, cuda12 = _fake_cublaslt(tmp_path / "c13", 13), _fake_cublaslt(tmp_path / "c12", 12)
    assert plugin.find_cublaslt([cuda13, cuda12], cuda_major=12).library.parent == cuda12 / "lib"
    assert plugin.find_cublaslt([cuda13, cuda12], cuda_major=11).library.parent == cuda13 / "lib"  # none: first
    monkeypatch.chdir(tmp_path)
    found = plugin.find_cublaslt([Path("c12")])
    assert found.library.is_absolute() and found.include.is_absolute()  # becomes the library's run path


def test_unusable_cublaslt_files_are_refused_with_the_reason(tmp_path):
    junk = _fake_cublaslt(tmp_path / "junk", 13)  # a text file named libcublasLt.so.13, an empty header
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_cublaslt([junk])
    assert_one_sentence(e.value, "no usable cuBLASLt", "does not declare cublasLtMatmul", "--gemm trt")
    (junk / "include" / "cublasLt.h").write_text("cublasStatus_t cublasLtMatmul(void);\n")
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_cublaslt([junk])
    assert "does not load" in str(e.value) and "\n" not in str(e.value)


def test_missing_cublaslt_is_one_sentence_naming_the_fallback(tmp_path):
    with pytest.raises(PluginUnavailable) as e:
        plugin.find_cublaslt([tmp_path / "a", _fake_cublaslt(tmp_path / "b")])
    assert_one_sentence(e.value, "cuBLASLt", "--gemm trt", str(tmp_path / "a"), "CUDA_HOME")


def test_gemm_choice_auto_falls_back_and_plugin_says_what_is_missing(tmp_path, monkeypatch, stub_cublaslt_check):
    from trtllm_kit.engine.gemm import resolve_gemm
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions

    def opts(**kw):
        return BuildOptions(limits=EngineLimits(8, 32, 96), **kw)

    plugin_kv, portable = "plugin", "portable"
    assert resolve_gemm(opts(weights="inputs"), portable) == "trt"
    assert resolve_gemm(opts(gemm="trt", weights="inputs"), plugin_kv) == "trt"
    with pytest.raises(ToolkitError) as e:
        resolve_gemm(opts(gemm="plugin", weights="inputs"), portable)
    assert_one_sentence(e.value, "--gemm plugin", "portable", "--gemm trt")
    with pytest.raises(ToolkitError) as e:
        resolve_gemm(opts(gemm="plugin"), plugin_kv)
    assert_one_sentence(e.value, "--gemm plugin", "--weights inputs")
    assert str(e.value).count("--gemm trt") == 1  # the hint once, not nested
    monkeypatch.setattr(plugin, "_cublaslt_roots", lambda: [tmp_path / "nothing"])
    assert resolve_gemm(opts(weights="inputs"), plugin_kv) == "trt"
    with pytest.raises(ToolkitError) as e:
        resolve_gemm(opts(gemm="plugin", weights="inputs"), plugin_kv)
    assert_one_sentence(e.value, "--gemm plugin", "cuBLASLt", str(tmp_path / "nothing"))
    monkeypatch.setattr(plugin, "_cublaslt_roots", lambda: [_fake_cublaslt(tmp_path / "cuda", 13)])
    assert resolve_gemm(opts(weights="inputs"), plugin_kv) == "plugin"

"""The toolkit's TensorRT plugins: find the tools, compile them (cached), load them, use them.

``TrtllmKitKVCacheAttention``: one decoder layer's attention with an in-place KV cache (see
``kv_cache_attention.cu`` for the tensors). ``TrtllmKitRMSNorm``: one RMSNorm as one kernel (``rms_norm.cu``).
``TrtllmKitGemm`` (optional, ``gemm.cu``): ``x @ w`` for a
weight matrix that is an engine input, by cuBLASLt. Both live in one library, compiled on the user's
machine with nvcc against the headers of the TensorRT that Python imports, for the current GPU, and
cached by content; the GEMM plugin is compiled in only when asked for, and then links cuBLASLt.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtllm_kit.errors import ToolkitError
from trtllm_kit.utils.fs import sha256_file

PLUGIN_NAME = "TrtllmKitKVCacheAttention"
PLUGIN_VERSION = "1"
SOURCE = Path(__file__).with_name("kv_cache_attention.cu")
NORM_NAME = "TrtllmKitRMSNorm"
NORM_VERSION = "1"
NORM_SOURCE = Path(__file__).with_name("rms_norm.cu")
ROPE_NAME = "TrtllmKitRotary"
ROPE_VERSION = "1"
ROPE_SOURCE = Path(__file__).with_name("rotary.cu")
# Included by the sources: part of their hash. The kernels' headers have no TensorRT dependency (the probes use them).
HEADERS = tuple(Path(__file__).with_name(n) for n in ("plugin_common.cuh", "kernel_common.cuh", "gemv.cuh",
                                                     "decode_attention.cuh", "rotary_kernel.cuh"))
GEMM_NAME = "TrtllmKitGemm"
GEMM_VERSION = "1"
GEMM_SOURCE = Path(__file__).with_name("gemm.cu")
GEMM_FALLBACK = "--gemm trt uses TensorRT's own matrix multiplies"
LIBRARY_NAME = "libtrtllm_kit_plugins.so"
FALLBACK = "--kv-mode portable works without it"
FIELDS = ("num_heads", "num_kv_heads", "head_dim")

# Fixed places searched after the flag, the environment and the module's own directory.
SYSTEM_INCLUDE_DIRS = (Path("/usr/include/x86_64-linux-gnu"), Path("/usr/local/tensorrt/include"),
                       Path("/opt/tensorrt/include"), Path("/usr/include"))
NVCC_DIRS = (Path("/usr/local/cuda/bin"),)

_loaded: dict[str, ctypes.CDLL] = {}
_keep_alive: list = []  # plugin field arrays must outlive the engine build


class PluginUnavailable(ToolkitError):
    """The KV-cache attention plugin cannot be compiled or loaded here (a tool or header is missing)."""


@dataclass(frozen=True)
class CublasLt:
    """cuBLASLt's header directory (holds ``cublasLt.h``) and shared library (``libcublasLt.so.<major>``)."""

    include: Path
    library: Path


@dataclass(frozen=True)
class PluginLibrary:
    """A compiled plugin library: the .so, its hash, its sources' hash, TensorRT version ("8.6.0"), arch
    ("sm_90"), and the cuBLASLt it links when the GEMM plugin is compiled in (else None)."""

    path: Path
    sha256: str
    source_sha256: str
    trt_version: str
    arch: str
    cublaslt: CublasLt | None = None

    @property
    def gemm(self) -> bool:
        return self.cublaslt is not None


def sources(gemm: bool = False) -> list[Path]:
    """The CUDA sources compiled into the library: attention, RMSNorm and rotary always, the GEMM plugin with
    ``gemm``."""
    return [SOURCE, NORM_SOURCE, ROPE_SOURCE] + ([GEMM_SOURCE] if gemm else [])


def source_sha256(gemm: bool = False) -> str:
    """Hash of the CUDA sources compiled into the library (part of the cache key and of engine metadata)."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in [*sources(gemm), *HEADERS])).hexdigest()


def _cublaslt_roots() -> list[Path]:
    """Where cuBLASLt may be: the CUDA toolkit (``$CUDA_HOME``, ``$CUDA_PATH``, ``/usr/local/cuda``) and the
    ``nvidia-cublas`` wheels PyTorch installs (``nvidia/cu13``, ``nvidia/cu12``, ``nvidia/cublas``)."""
    roots = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    roots.append(Path("/usr/local/cuda"))
    roots += [r / "targets" / "x86_64-linux" for r in list(roots)]
    try:
        import nvidia  # namespace package of NVIDIA's wheels

        for base in map(Path, getattr(nvidia, "__path__", [])):
            roots += [base / "cu13", base / "cu12", base / "cublas"]
    except ImportError:
        pass
    return roots


def _usable_cublaslt(include: Path, library: Path) -> str | None:
    """Why this header/library pair cannot be used (None when it can): the header must declare
    ``cublasLtMatmul`` and the library load here and export ``cublasLtGetVersion`` (no GPU needed)."""
    try:
        if "cublasLtMatmul" not in (include / "cublasLt.h").read_text(errors="replace"):
            return f"{include / 'cublasLt.h'} does not declare cublasLtMatmul"
        lib = ctypes.CDLL(str(library))
        if not hasattr(lib, "cublasLtGetVersion"):
            return f"{library} does not export cublasLtGetVersion"
    except OSError as e:
        return f"{library} does not load ({e})"
    return None


def find_cublaslt(roots: list[Path] | None = None, cuda_major: int | None = None) -> CublasLt:
    """cuBLASLt for the GEMM plugin: the first root with ``include/cublasLt.h`` and a ``lib``/``lib64``
    ``libcublasLt.so.<major>`` (the newest major there) that load (``_usable_cublaslt``); paths made absolute.

    Args:
        roots: directories to try; default ``_cublaslt_roots()``.
        cuda_major: prefer a library of this CUDA major (nvcc's), trying the others only if none has it.

    Raises:
        PluginUnavailable: none found or none usable (one sentence naming the places tried and the fallback).
    """
    roots = _cublaslt_roots() if roots is None else roots
    found, refused = [], []
    for root in (Path(r).absolute() for r in roots):
        if not (root / "include" / "cublasLt.h").is_file():
            continue
        for lib_dir in (root / "lib", root / "lib64"):
            libs = [p for p in lib_dir.glob("libcublasLt.so.[0-9]*") if re.fullmatch(r"libcublasLt\.so\.\d+", p.name)]
            if libs:
                found.append(CublasLt(root / "include", max(libs, key=lambda p: int(p.name.rsplit(".", 1)[1]))))
                break
    if cuda_major is not None:
        found.sort(key=lambda c: c.library.name != f"libcublasLt.so.{cuda_major}")  # stable: same major first
    for candidate in found:
        why = _usable_cublaslt(candidate.include, candidate.library)
        if why is None:
            return candidate
        refused.append(why)
    where = ", ".join(repr(str(r)) for r in roots)
    detail = f" ({'; '.join(refused)})" if refused else ""
    raise PluginUnavailable(
        f"no usable cuBLASLt (cublasLt.h and libcublasLt.so.<major>) for the GEMM plugin in {where}{detail}",
        f"install the CUDA toolkit or the nvidia-cublas wheel, or set CUDA_HOME; {GEMM_FALLBACK}")


def header_version(include: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) from ``include/NvInferVersion.h`` (macros resolved, as 10+ needs), or None."""
    try:
        text = (Path(include) / "NvInferVersion.h").read_text(errors="replace")
    except OSError:
        return None
    defines = dict(re.findall(r"^\s*#\s*define\s+(\w+)\s+(\w+)", text, flags=re.M))

    def resolve(name: str) -> int | None:
        for _ in range(8):
            if name.isdigit():
                return int(name)
            if name not in defines:
                return None
            name = defines[name]
        return None

    parts = [resolve(f"NV_TENSORRT_{p}") for p in ("MAJOR", "MINOR", "PATCH")]
    return None if parts[0] is None else (parts[0], parts[1] or 0, parts[2] or 0)


def _module_major(trt_module) -> int:
    return int(str(trt_module.__version__).split(".")[0])


def find_trt_include(trt_module, explicit: str | os.PathLike | None = None) -> Path:
    """The TensorRT include directory matching the imported ``tensorrt`` module.

    A directory counts if it holds ``NvInfer.h`` and an ``NvInferVersion.h`` whose major version is the
    module's. An explicit directory or ``TRT_INCLUDE_DIR`` is the only one tried when given.

    Args:
        trt_module: the imported ``tensorrt`` module (its ``__version__`` and ``__file__`` are used).
        explicit: the ``--trt-include`` directory, if the user gave one.

    Returns:
        The include directory.

    Raises:
        PluginUnavailable: no matching headers were found (one sentence saying how to point at them).
    """
    major = _module_major(trt_module)
    given = explicit or os.environ.get("TRT_INCLUDE_DIR")
    if given:
        candidates = [Path(given)]
    else:
        module_dir = Path(trt_module.__file__).resolve().parent
        candidates = [module_dir / "include", module_dir.parent / "include", *SYSTEM_INCLUDE_DIRS]
    found = []
    for inc in candidates:
        version = header_version(inc) if (inc / "NvInfer.h").is_file() else None
        if version and version[0] == major:
            return inc
        if version:
            found.append(f"{inc} has TensorRT {'.'.join(map(str, version))} headers")
    where = "; ".join(found) if found else f"nothing in {', '.join(str(c) for c in candidates)}"
    raise PluginUnavailable(
        f"TensorRT {major} headers (NvInfer.h, NvInferVersion.h) for the kv-cache attention plugin were not "
        f"found ({where})", f"point --trt-include DIR or TRT_INCLUDE_DIR at them; {FALLBACK}")


def find_nvcc() -> Path:
    """nvcc from PATH, ``$CUDA_HOME/bin`` or ``/usr/local/cuda/bin``.

    Raises:
        PluginUnavailable: not found there.
    """
    on_path = shutil.which("nvcc")
    if on_path:
        return Path(on_path)
    dirs = [Path(os.environ[v]) / "bin" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    for d in [*dirs, *NVCC_DIRS]:
        if (d / "nvcc").is_file() and os.access(d / "nvcc", os.X_OK):
            return d / "nvcc"
    raise PluginUnavailable("nvcc (the CUDA compiler) is needed to build the kv-cache attention plugin and was not "
                            "found on PATH, in $CUDA_HOME/bin or in /usr/local/cuda/bin",
                            f"install the CUDA toolkit or put nvcc on PATH; {FALLBACK}")


def find_trt_library(trt_module) -> Path | None:
    """The ``libnvinfer.so.<major>`` the imported module uses (mapped in this process, next to the module or
    in a sibling ``tensorrt_libs`` package), or None."""
    name = f"libnvinfer.so.{_module_major(trt_module)}"
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = Path(line.split(maxsplit=5)[-1])
            if (path.name == name or path.name.startswith(name + ".")) and path.is_file():
                return path
    except OSError:
        pass
    module_dir = Path(trt_module.__file__).resolve().parent
    for d in (module_dir, module_dir.parent / "tensorrt_libs"):
        if (d / name).is_file():
            return d / name
    return None


@functools.lru_cache(maxsize=None)
def _nvcc_version(nvcc: Path) -> str:
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def _nvcc_major(nvcc: Path) -> int | None:
    """CUDA major version of nvcc ("Build cuda_13.0.r13.0/compiler..." -> 13), or None."""
    m = re.search(r"cuda_(\d+)\.", _nvcc_version(nvcc))
    return int(m.group(1)) if m else None


def _current_arch() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return f"sm_{major}{minor}"
    except ImportError:
        pass
    raise PluginUnavailable("the kv-cache attention plugin is compiled for the current GPU and no CUDA GPU is "
                            "visible to PyTorch", f"run on the GPU machine; {FALLBACK}")


def compile_plugin_library(include: str | os.PathLike, trt_version: str, arch: str,
                           nvinfer: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                           log: Callable[[str], None] = print, cublaslt: CublasLt | None = None) -> PluginLibrary:
    """Compile the plugins with nvcc into ``<cache_dir>/<key>/libtrtllm_kit_plugins.so``, or reuse that file.

    The key hashes the sources, NvInferVersion.h, the TensorRT version, arch, nvcc's version and the links.

    Args:
        include: TensorRT include directory (holds NvInfer.h and NvInferVersion.h).
        trt_version: version of the TensorRT it will be loaded into, e.g. ``"8.6.0"``.
        arch: GPU architecture, ``"sm_90"`` or ``"90"``.
        nvinfer: ``libnvinfer.so.<major>`` to link so that the registration's ``getPluginRegistry`` resolves;
            None links nothing (loading then needs libnvinfer loaded globally).
        cache_dir: default ``$TRTLLM_KIT_CACHE/plugins``, else ``~/.cache/trtllm-kit/plugins``.
        log: gets one line per compilation, with its duration (and one if libnvinfer is not linked).
        cublaslt: compile the GEMM plugin in too, linking this cuBLASLt (its directory becomes the library's
            run path, so it loads without LD_LIBRARY_PATH); None: the library without the GEMM plugin (attention, RMSNorm and rotary).

    Raises:
        PluginUnavailable: nvcc is missing or fails (the message ends with nvcc's last error lines).
    """
    include = Path(include)
    digits = re.sub(r"^(sm_|compute_)", "", str(arch))
    if not digits.isalnum():
        raise PluginUnavailable(f"GPU architecture {arch!r} is not of the form sm_90",
                                f"pass e.g. sm_90; {FALLBACK}")
    arch = f"sm_{digits}"
    nvcc = find_nvcc()
    if cache_dir is None:
        root = os.environ.get("TRTLLM_KIT_CACHE")
        cache_dir = Path(root) / "plugins" if root else Path.home() / ".cache" / "trtllm-kit" / "plugins"
    nvinfer = Path(nvinfer) if nvinfer else None
    srcs = sources(gemm=cublaslt is not None)
    src_hash = source_sha256(gemm=cublaslt is not None)
    key_parts = [src_hash, sha256_file(include / "NvInferVersion.h"), trt_version, arch, _nvcc_version(nvcc),
                 nvinfer.name if nvinfer else "unlinked"]
    if cublaslt is not None:
        key_parts += [sha256_file(cublaslt.include / "cublasLt.h"), str(cublaslt.library.resolve())]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:20]
    target = Path(cache_dir) / key / LIBRARY_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [str(nvcc), "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-shared",
               "-gencode", f"arch=compute_{digits},code={arch}", f"-I{include}",
               *map(str, srcs), "-o", tmp]
        if cublaslt is not None:
            lib_dir = cublaslt.library.parent
            cmd[-2:-2] = [f"-I{cublaslt.include}"]
            cmd += [f"-L{lib_dir}", f"-l:{cublaslt.library.name}", "-Xlinker", "-rpath", "-Xlinker", str(lib_dir)]
        if nvinfer:
            cmd += [f"-L{nvinfer.parent}", f"-l:{nvinfer.name}"]
        else:
            log(f"{PLUGIN_NAME}: libnvinfer not found; compiling without linking it")
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                tail = " | ".join(ln for ln in proc.stderr.strip().splitlines()[-5:])
                what = ", ".join(p.name for p in srcs)
                raise PluginUnavailable(f"nvcc failed to compile {what} for {arch} against {include}: {tail}",
                                        GEMM_FALLBACK if cublaslt is not None else FALLBACK)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        names = f"{PLUGIN_NAME}, {NORM_NAME}, {ROPE_NAME}" + (f" and {GEMM_NAME} (cuBLASLt {cublaslt.library})"
                                                 if cublaslt is not None else "")
        log(f"compiled the {names} plugin for {arch} against TensorRT {trt_version} headers in "
            f"{time.perf_counter() - start:.1f} s: {target}")
    return PluginLibrary(target, sha256_file(target), src_hash, trt_version, arch, cublaslt)


def compile_plugin(trt_module, include: str | os.PathLike | None = None, arch: str | None = None,
                   cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                   gemm: bool = False) -> PluginLibrary:
    """Compile (or reuse) the plugin library for the imported TensorRT and the current GPU.

    Args:
        trt_module: the imported ``tensorrt`` module.
        include: TensorRT include directory (``--trt-include``); ``find_trt_include`` looks if None.
        arch: e.g. ``"sm_90"``; default the current GPU's, through PyTorch.
        cache_dir, log: as for ``compile_plugin_library``.
        gemm: compile the GEMM plugin in too (cuBLASLt found by ``find_cublaslt``).

    Raises:
        PluginUnavailable: headers, nvcc, cuBLASLt (with ``gemm``) or a GPU are missing, or compilation failed.
    """
    include = find_trt_include(trt_module, include)
    cublaslt = find_cublaslt(cuda_major=_nvcc_major(find_nvcc())) if gemm else None
    return compile_plugin_library(include, str(trt_module.__version__), arch or _current_arch(),
                                  nvinfer=find_trt_library(trt_module), cache_dir=cache_dir, log=log, cublaslt=cublaslt)


def load_plugin(path: str | os.PathLike, trt_module, gemm: bool = False, norm: bool = False,
                rope: bool = False) -> None:
    """Load a compiled plugin library (idempotent) and check that TensorRT's registry has its creators.

    Args:
        path: the library from ``compile_plugin``.
        trt_module: the imported ``tensorrt`` module (so libnvinfer is loaded first).
        gemm: the library must hold the GEMM plugin too.
        norm: the library must hold the RMSNorm plugin too (libraries from before it do not).
        rope: the library must hold the rotary plugin too (libraries from before it do not).

    Raises:
        PluginUnavailable: the library does not load, or its creator is not in TensorRT's registry.
    """
    key = str(Path(path).resolve())
    if key not in _loaded:
        nvinfer = find_trt_library(trt_module)
        try:
            if nvinfer:  # make getPluginRegistry global for a library built without linking it
                ctypes.CDLL(str(nvinfer), mode=ctypes.RTLD_GLOBAL)
            _loaded[key] = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            hint = (f"put the directory of the libcublasLt it names on LD_LIBRARY_PATH, or {GEMM_FALLBACK}"
                    if gemm and "cublas" in str(e).lower() else FALLBACK)
            raise PluginUnavailable(f"could not load the plugin library {key}: {e}", hint) from e
    creator = trt_module.get_plugin_registry().get_plugin_creator(PLUGIN_NAME, PLUGIN_VERSION, "")
    if creator is None:
        raise PluginUnavailable(f"{key} loaded but TensorRT {trt_module.__version__} has no {PLUGIN_NAME} "
                                f"version {PLUGIN_VERSION} creator (built for another TensorRT?)", FALLBACK)
    if norm and trt_module.get_plugin_registry().get_plugin_creator(NORM_NAME, NORM_VERSION, "") is None:
        raise PluginUnavailable(f"{key} has no {NORM_NAME} version {NORM_VERSION} creator (compiled before it)",
                                "rebuild the engine")
    if rope and trt_module.get_plugin_registry().get_plugin_creator(ROPE_NAME, ROPE_VERSION, "") is None:
        raise PluginUnavailable(f"{key} has no {ROPE_NAME} version {ROPE_VERSION} creator (compiled before it)",
                                "rebuild the engine")
    if gemm and trt_module.get_plugin_registry().get_plugin_creator(GEMM_NAME, GEMM_VERSION, "") is None:
        raise PluginUnavailable(f"{key} has no {GEMM_NAME} version {GEMM_VERSION} creator (compiled without the "
                                "GEMM plugin)", GEMM_FALLBACK)


def add_kv_attention(trt_module, network, q, k, v, k_cache, v_cache, write_indices, mask,
                     num_heads: int, num_kv_heads: int, head_dim: int, name: str):
    """Add one plugin layer: append this step's keys/values to the cache in place, then attend.

    Args:
        trt_module: the imported ``tensorrt`` module (the plugin must be loaded).
        network: the ``INetworkDefinition``.
        q: (B, num_heads, S, head_dim) queries, rotary applied and scaled by 1/sqrt(head_dim).
        k, v: (B, num_kv_heads, S, head_dim) this step's keys (rotary applied) and values.
        k_cache, v_cache: (B, num_kv_heads, M, head_dim) caches of static length M (max_seq).
        write_indices: (B,) int32, tokens already cached per row (where this step's first token goes).
        mask: (B, M) int32, 1 for real tokens, cached or new.
        num_heads, num_kv_heads, head_dim: this layer's shape (num_heads a multiple of num_kv_heads).
        name: the layer name.

    Returns:
        The layer: output 0 (B, num_heads, S, head_dim) attention, 1 and 2 the caches (aliasing 3 and 4).

    Raises:
        PluginUnavailable: the plugin is not loaded.
        ToolkitError: the plugin rejected the shape fields (the reason is printed on stderr).
    """
    import numpy as np

    trt = trt_module
    creator = trt.get_plugin_registry().get_plugin_creator(PLUGIN_NAME, PLUGIN_VERSION, "")
    if creator is None:
        raise PluginUnavailable(f"the {PLUGIN_NAME} plugin is not loaded (call load_plugin first)", FALLBACK)
    arrays = [np.array([value], dtype=np.int32) for value in (num_heads, num_kv_heads, head_dim)]
    fields = trt.PluginFieldCollection(
        [trt.PluginField(f, a, trt.PluginFieldType.INT32) for f, a in zip(FIELDS, arrays)])
    plugin = creator.create_plugin(name, fields)
    if plugin is None:
        raise ToolkitError(f"layer {name}: the {PLUGIN_NAME} plugin rejected num_heads={num_heads} "
                           f"num_kv_heads={num_kv_heads} head_dim={head_dim}",
                           "num_heads must be a multiple of num_kv_heads and head_dim even, at most 256")
    layer = network.add_plugin_v2([q, k, v, k_cache, v_cache, write_indices, mask], plugin)
    layer.name = name
    _keep_alive.append((arrays, fields, plugin))
    return layer


# the op before the multiply, folded in (gemm.cu); "rms_norm_folded": an RMSNorm whose scale is in w's columns
GEMM_PROLOGUES = {"none": 0, "rms_norm": 1, "swiglu": 2, "rms_norm_folded": 3}


def add_gemm(trt_module, network, x, w, name: str, w_layout: int = 0, prologue: str = "none", scale=None,
             eps: float = 0.0, residual=None, swiglu: bool = False, rope: "tuple | None" = None, cos=None, sin=None):
    """Add one ``TrtllmKitGemm`` layer: ``y = x' @ w`` (``w_layout`` 0) or ``y = x' @ w.T`` (1), float32 accumulation;
    cuBLASLt, or at batch-1 decode (fp16, one row, ``w_layout`` 1, K a multiple of 8) the plugin's own GEMV.

    Args:
        trt_module: the imported ``tensorrt`` module (the library loaded with ``gemm=True``).
        network: the ``INetworkDefinition``.
        x: (..., K) activations; (..., 2K) ``[gate | up]`` with ``prologue="swiglu"``.
        w: the weight matrix of x's type (an engine input): (K, N) row-major as the exporter stores it (in x out,
            ``w_layout`` 0), or (N, K) as PyTorch's ``nn.Linear`` stores it (out x in, ``w_layout`` 1).
        name: the layer name.
        w_layout: 0 or 1, as above.
        prologue: what x' is: ``"none"`` x; ``"rms_norm"`` LLaMA's RMSNorm of x, ``T(T(x * rsqrt(mean(x^2) + eps)) *
            scale)`` (as ``add_rms_norm``); ``"swiglu"`` ``T(T(silu(gate)) * up)``; ``"rms_norm_folded"`` the RMSNorm
            with its scale already multiplied into w's K axis (no ``scale``): ``(x @ w') * rsqrt(mean(x^2) + eps)``.
        scale: the RMSNorm's scale, K elements of any float type (``prologue="rms_norm"`` only).
        eps: the RMSNorm's epsilon (the model's ``rms_norm_eps``).
        residual: (..., N) of x's type, added to the product (``T(T(x' @ w) + residual)``; one rounding on cuBLASLt),
            or None.
        swiglu: the fused gate/up multiply's SwiGLU after it: w's N outputs are ``[gate | up]`` and y is
            ``T(T(silu(gate)) * up)``, (..., N / 2). Not with ``residual``.
        rope: ``(num_heads, num_kv_heads, head_dim, scale)``: the fused q/k/v multiply's rotary embedding after it,
            as ``add_rotary`` with ``k_lin=None`` computes it from ``cos`` and ``sin`` (B, 1, S, head_dim, any float
            type); x is then (B, S, K) and w's N outputs ``[q | k | v]``, (num_heads + 2 num_kv_heads) * head_dim.
            Not with ``residual`` or ``swiglu``.

    Returns:
        The layer; output 0 is (..., N) of x's type, (..., N / 2) with ``swiglu``; with ``rope`` q (B, num_heads,
        S, head_dim), k and v (B, num_kv_heads, S, head_dim).

    Raises:
        PluginUnavailable: the GEMM plugin is not loaded.
        ValueError: a ``w_layout`` other than 0 or 1, an unknown prologue, ``scale`` given without
            ``prologue="rms_norm"`` (or missing with it), more than one epilogue, or ``rope`` without both tables.
        ToolkitError: the plugin rejected the fields (a negative eps, head counts <= 0, an odd head_dim).
    """
    import numpy as np

    trt = trt_module
    if w_layout not in (0, 1):
        raise ValueError(f"w_layout is {w_layout!r}, expected 0 (K x N) or 1 (N x K)")
    if prologue not in GEMM_PROLOGUES:
        raise ValueError(f"prologue is {prologue!r}, expected one of {', '.join(GEMM_PROLOGUES)}")
    if (scale is not None) != (prologue == "rms_norm"):
        raise ValueError("scale goes with prologue='rms_norm' and only with it")
    if swiglu + (residual is not None) + (rope is not None) > 1:
        raise ValueError("one epilogue per multiply: swiglu, a residual or rope")
    if (rope is None) != (cos is None) or (rope is None) != (sin is None):
        raise ValueError("rope goes with the cos and sin tables, and they only with it")
    creator = trt.get_plugin_registry().get_plugin_creator(GEMM_NAME, GEMM_VERSION, "")
    if creator is None:
        raise PluginUnavailable(f"the {GEMM_NAME} plugin is not loaded (load_plugin(..., gemm=True) first)",
                                GEMM_FALLBACK)
    epilogue = 3 if rope is not None else 2 if swiglu else int(residual is not None)
    heads = tuple(int(v) for v in rope[:3]) if rope is not None else (0, 0, 0)
    values = [np.array([v], dtype=np.int32) for v in (w_layout, GEMM_PROLOGUES[prologue], epilogue) + heads]
    values.append(np.array([eps], dtype=np.float32))
    values.append(np.array([rope[3] if rope is not None else 1.0], dtype=np.float32))
    kinds = [trt.PluginFieldType.INT32] * 6 + [trt.PluginFieldType.FLOAT32] * 2
    names = ("w_layout", "prologue", "epilogue", "rope_heads", "rope_kv_heads", "rope_head_dim", "eps", "rope_scale")
    fields = trt.PluginFieldCollection([trt.PluginField(n, v, k) for n, v, k in zip(names, values, kinds)])
    plugin = creator.create_plugin(name, fields)
    if plugin is None:
        raise ToolkitError(f"layer {name}: the {GEMM_NAME} plugin rejected prologue={prologue} eps={eps}"
                           + (f" rope={rope}" if rope is not None else ""),
                           "eps must be >= 0; rope's head counts > 0 and its head_dim even")
    inputs = [x, w] + ([scale] if scale is not None else []) + ([residual] if residual is not None else [])
    inputs += [cos, sin] if rope is not None else []
    layer = network.add_plugin_v2(inputs, plugin)
    layer.name = name
    _keep_alive.append((values, fields, plugin))
    return layer


def add_rms_norm(trt_module, network, x, w, eps: float, name: str):
    """Add one ``TrtllmKitRMSNorm`` layer: ``y = T(float(T(x * rsqrt(mean(x^2) + eps))) * w)`` over the last axis.

    Args:
        trt_module: the imported ``tensorrt`` module (the plugin library loaded).
        network: the ``INetworkDefinition``.
        x: (..., H) activations (fp16, fp32, or bf16 on TensorRT >= 9).
        w: the scale, H elements of any shape (TensorRT 8.6 widens fp16 constants to float: any float type).
        eps: the model's ``rms_norm_eps``.
        name: the layer name.

    Returns:
        The layer; output 0 is (..., H) of x's type.

    Raises:
        PluginUnavailable: the plugin is not loaded.
        ToolkitError: the plugin rejected ``eps``.
    """
    import numpy as np

    trt = trt_module
    creator = trt.get_plugin_registry().get_plugin_creator(NORM_NAME, NORM_VERSION, "")
    if creator is None:
        raise PluginUnavailable(f"the {NORM_NAME} plugin is not loaded (call load_plugin first)", FALLBACK)
    value = np.array([eps], dtype=np.float32)
    fields = trt.PluginFieldCollection([trt.PluginField("eps", value, trt.PluginFieldType.FLOAT32)])
    plugin = creator.create_plugin(name, fields)
    if plugin is None:
        raise ToolkitError(f"layer {name}: the {NORM_NAME} plugin rejected eps={eps}", "eps must be >= 0")
    layer = network.add_plugin_v2([x, w], plugin)
    layer.name = name
    _keep_alive.append((value, fields, plugin))
    return layer


def add_rotary(trt_module, network, q_lin, k_lin, cos, sin, num_heads: int, num_kv_heads: int, head_dim: int,
               scale: float, name: str):
    """Add one ``TrtllmKitRotary`` layer: one block's rotary embedding of q and k, and q's scale, as one kernel.

    Args:
        trt_module: the imported ``tensorrt`` module (the plugin library loaded).
        network: the ``INetworkDefinition``.
        q_lin, k_lin: (B, S, num_heads * head_dim) and (B, S, num_kv_heads * head_dim), the projections' outputs;
            or ``k_lin`` None and ``q_lin`` the fused q/k/v multiply's output (B, S, (num_heads + 2 num_kv_heads) *
            head_dim), ``[q | k | v]``: the layer then also splits v off, as output 2 (B, num_kv_heads, S, head_dim).
        cos, sin: (B, 1, S, head_dim) per position, any float type (TensorRT 8.6 widens fp16 tables to float).
        num_heads, num_kv_heads, head_dim: this block's (width-pruned blocks differ); head_dim even.
        scale: q's factor after rotary (``head_dim ** -0.5`` in the export), rounded to q's type as the exported
            graph's Mul does (eager scales inside its attention instead).
        name: the layer name.

    Returns:
        The layer; output 0 is q (B, num_heads, S, head_dim), output 1 k (B, num_kv_heads, S, head_dim), both of
        q_lin's type: ``T(T(x * cos) + T(rotate_half(x) * sin))``, q then ``T(q * T(scale))``; with ``k_lin`` None
        also output 2, v (B, num_kv_heads, S, head_dim), q_lin's last part as it is.

    Raises:
        PluginUnavailable: the plugin is not loaded.
        ToolkitError: the plugin rejected the fields (a head count <= 0, an odd head_dim).
    """
    import numpy as np

    trt = trt_module
    creator = trt.get_plugin_registry().get_plugin_creator(ROPE_NAME, ROPE_VERSION, "")
    if creator is None:
        raise PluginUnavailable(f"the {ROPE_NAME} plugin is not loaded (call load_plugin first)", FALLBACK)
    fused = k_lin is None
    values = [np.array([v], dtype=np.int32) for v in (num_heads, num_kv_heads, head_dim)]
    values.append(np.array([scale], dtype=np.float32))
    values.append(np.array([fused], dtype=np.int32))
    kinds = [trt.PluginFieldType.INT32] * 3 + [trt.PluginFieldType.FLOAT32, trt.PluginFieldType.INT32]
    fields = trt.PluginFieldCollection([trt.PluginField(n, v, k) for n, v, k in
                                        zip(("num_heads", "num_kv_heads", "head_dim", "scale", "fused_qkv"), values,
                                            kinds)])
    plugin = creator.create_plugin(name, fields)
    if plugin is None:
        raise ToolkitError(f"layer {name}: the {ROPE_NAME} plugin rejected num_heads={num_heads}, "
                           f"num_kv_heads={num_kv_heads}, head_dim={head_dim}", "head_dim must be even")
    layer = network.add_plugin_v2([q_lin, cos, sin] if fused else [q_lin, k_lin, cos, sin], plugin)
    layer.name = name
    _keep_alive.append((values, fields, plugin))
    return layer

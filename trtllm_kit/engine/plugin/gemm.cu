// TrtllmKitGemm: y = x @ w for a weight matrix that is an engine input, computed by cuBLASLt, as a
// TensorRT IPluginV2DynamicExt that builds against the TensorRT 8.6 and 10.x headers; optionally with the op before
// it (an RMSNorm, or SwiGLU's silu(gate) * up) and the residual add after it folded in.
//
// Why: TensorRT 8.6 builds the plugin KV layout at optimization level 0, where every MatrixMultiply
// runs the first kernel that works (H200, llama-7b at batch 16: 0.37 ms per 4096x11008 weight, 0.24
// TB/s); cuBLASLt's heuristics pick a kernel per shape with no timing at build time. The folds: at batch-1 decode
// each small kernel between the multiplies (a norm, a residual add, the SwiGLU product) cost 2-5 us of a 4.2 ms step
// (H200, llama-7b, eighth session: 0.8 ms outside the multiplies, scripts/profile_layers.py).
//
// Inputs (linear layout; T = half, float, or bf16 where TensorRT has it; x, w and r of one type):
//   0 x   T  (..., K)   activations, any rank >= 1; M = product of the leading dims
//                       (..., 2K) with prologue 2: [gate | up], the fused gate/up multiply's output
//   1 w   T  (K, N)     row-major, as the exporter stores a Linear's weight (in x out; field w_layout = 0), or
//            (N, K)     PyTorch's nn.Linear layout (out x in; w_layout = 1)
//   2 g   G  K values   prologue 1 only: the RMSNorm's scale (G any float type: TensorRT 8.6 widens fp16 constants)
//   2|3 r T  (..., N)   epilogue 1 only: the residual, x's leading dims (input 3 when prologue is 1)
// Output:
//   0 y   T  (..., N)   float32 accumulation, rounded to T
// Fields (serialized as 16 bytes; engines from before them: 4 bytes, w_layout only, or 0 bytes, read as 0):
//   w_layout  int32  0 or 1, as above
//   prologue  int32  0: x as given; 1: RMSNorm of x, as transformers' LlamaRMSNorm (rms_norm.cu):
//                    x' = T(T(x * rsqrt(mean(x^2) + eps)) * g); 2: SwiGLU, as transformers' LlamaMLP:
//                    x' = T(T(silu(gate)) * up)
//   eps       float  prologue 1's epsilon
//   epilogue  int32  0: y = T(x' @ w); 1: y = T(T(x' @ w) + r) on the GEMV (eager's two roundings), T(x' @ w + r)
//                    on cuBLASLt (beta = 1: one rounding)
//
// cuBLASLt is column-major: y^T (N x M) = op(A) (N x K) . x^T (K x M), B = x viewed as K x M with leading dimension
// K. w_layout 0: A = w viewed as N x K with leading dimension N, no transpose; 1: A = w viewed as K x N with leading
// dimension K, transposed. A prologue runs first into the workspace (one kernel), cuBLASLt reads that.
// Decode GEMV: with w_layout 1, fp16, one row (M = 1: batch-1 decode), K a multiple of 8 and at most 24560 (x in 48 KB
// of shared memory), 16-byte aligned x and w, and a norm scale (prologue 1) in half or float,
// the plugin runs its own kernel instead, the prologue and epilogue inside it (one warp per output, 16-byte streaming
// loads of w, the first ones issued before x is staged; H200: llama-7b's fused decode step's multiplies at 3.88 TB/s
// against cuBLAS's 3.60, scripts/h200/gemv_probe.cu; the llama-7b engine's batch-1 step 4.21 ms against 4.47 with
// cuBLASLt, eighth session). TRTLLM_KIT_GEMV=0 (read when the plugin is created) keeps cuBLASLt;
// TRTLLM_KIT_GEMV_UNROLL=4|8|16 sets the loads of w in flight per lane (an A/B knob; default 4: llama-7b's batch-1
// step on an H200 took 3.96 / 4.10 / 4.40 ms GPU time at 4 / 8 / 16, ninth session). On Hopper and later the GEMV
// is launched with programmatic dependent launch (PDL): it starts streaming w while the kernel before it finishes,
// and waits for it before reading x (TRTLLM_KIT_PDL=0: plain launches).
// Each plugin object caches one cuBLASLt plan (descriptors + heuristic's algorithm) per (M, alignment);
// enqueue only launches, on the given stream, into TensorRT's workspace: capturable in a CUDA graph
// once a plan for that M exists (the runner's uncaptured warm-up step makes it).

#pragma nv_diag_suppress 1444
#pragma nv_diag_suppress 1215
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 997

#include "plugin_common.cuh"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace
{

constexpr char const* kGemmName = "TrtllmKitGemm";
constexpr char const* kGemmVersion = "1";
constexpr size_t kWorkspaceBytes = size_t(32) << 20; // cuBLASLt's recommendation for Hopper

// Diagnostics: cuBLASLt plans made so far in this process (a count that grows while a model decodes at one
// batch size means plans are being remade every step: host time that an IProfiler charges to the layer).
std::atomic<uint64_t> gPlansMade{0};
// Diagnostics: multiplies run by the decode GEMV so far in this process (tests check which path ran).
std::atomic<uint64_t> gGemvLaunches{0};

cudaDataType_t cuda_type(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kHALF: return CUDA_R_16F;
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16: return CUDA_R_16BF;
#endif
    default: return CUDA_R_32F;
    }
}

constexpr uint32_t kMinAlignment = 16; // below this cuBLASLt falls back to slow kernels

size_t round_up(size_t n)
{
    return (n + 255) / 256 * 256;
}

// Bytes of a tensor at the dims TensorRT gives (its largest in getWorkspaceSize).
size_t bytes_of(nvinfer1::PluginTensorDesc const& d)
{
    size_t n = d.type == nvinfer1::DataType::kFLOAT ? 4 : 2;
    for (int32_t i = 0; i < d.dims.nbDims; ++i)
        n *= size_t(d.dims.d[i] > 0 ? d.dims.d[i] : 0);
    return n;
}

// Largest power of two <= 256 dividing the address (cuBLASLt's alignment preference).
uint32_t alignment_of(void const* p)
{
    uintptr_t const a = reinterpret_cast<uintptr_t>(p);
    uint32_t align = 256;
    while (align > 1 && (a % align) != 0)
        align /= 2;
    return align;
}

// One row only: at 2-4 rows it ran 0-70% slower than cuBLASLt per weight (H200, tests/test_gemm_gpu.py, eighth session).
constexpr int kGemvMaxRows = 1;
constexpr int kGemvThreads = 256; // 8 warps, one output each

enum Prologue : int32_t
{
    kNone = 0,
    kRmsNorm = 1,
    kSwiGlu = 2,
};

// What a multiply folds in: the op before it (Prologue), its scale and epsilon, and the residual added after it.
struct Folds
{
    int32_t prologue = kNone;
    float eps = 0.f;
    int32_t epilogue = 0; // 1: + residual
};

__device__ __forceinline__ float silu(float v)
{
    return v / (1.f + __expf(-v));
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float* partial)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0)
        partial[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < int(blockDim.x >> 5); ++i)
        s += partial[i];
    __syncthreads(); // partial may be reused
    return s;
}

// x' (1 x K, fp16) into shared memory as 16-byte vectors: x itself, its RMSNorm, or SwiGLU of [gate | up].
template <int PRO, typename G>
__device__ __forceinline__ void stage_x(uint4* xs, __half const* __restrict__ x, G const* __restrict__ g, int kv,
    float eps, float* partial)
{
    uint4 const* x4 = reinterpret_cast<uint4 const*>(x);
    if (PRO == kSwiGlu)
    {
        for (int i = threadIdx.x; i < kv; i += blockDim.x)
        {
            uint4 const gv = x4[i], uv = x4[kv + i];
            __half const* gh = reinterpret_cast<__half const*>(&gv);
            __half const* uh = reinterpret_cast<__half const*>(&uv);
            uint4 out;
            __half* oh = reinterpret_cast<__half*>(&out);
#pragma unroll
            for (int j = 0; j < 8; ++j)
                oh[j] = __float2half_rn(trtllm_kit::round_to<__half>(silu(__half2float(gh[j]))) * __half2float(uh[j]));
            xs[i] = out;
        }
    }
    else
    {
        float sum = 0.f;
        for (int i = threadIdx.x; i < kv; i += blockDim.x)
        {
            uint4 const v = x4[i];
            xs[i] = v;
            if (PRO == kRmsNorm)
            {
                __half const* h = reinterpret_cast<__half const*>(&v);
#pragma unroll
                for (int j = 0; j < 8; ++j)
                {
                    float const f = __half2float(h[j]);
                    sum += f * f;
                }
            }
        }
        if (PRO == kRmsNorm)
        {
            float const r = rsqrtf(block_sum(sum, partial) / float(kv * 8) + eps);
            for (int i = threadIdx.x; i < kv; i += blockDim.x) // each thread rewrites the vectors it staged
            {
                uint4 v = xs[i];
                __half* h = reinterpret_cast<__half*>(&v);
#pragma unroll
                for (int j = 0; j < 8; ++j) // rounded to fp16 before the scale, as eager (rms_norm.cu)
                    h[j] = __float2half_rn(trtllm_kit::round_to<__half>(__half2float(h[j]) * r)
                        * trtllm_kit::to_f32(g[i * 8 + j]));
                xs[i] = v;
            }
        }
    }
    __syncthreads();
}

// y (1 x N) = x' (1 x K) . w^T (+ r), w (N x K) row-major, fp16 in and out, float accumulation. One warp per output
// n: its lanes stream w's row n in 16-byte vectors (evict-first: read once per step), U in flight per lane, the first
// U issued before x' is staged in shared memory (they do not depend on it); a warp-shuffle sum.
template <int PRO, int EPI, int U, typename G>
__global__ void __launch_bounds__(kGemvThreads) gemv_out_x_in(__half const* __restrict__ w,
    __half const* __restrict__ x, G const* __restrict__ g, __half const* __restrict__ r, __half* __restrict__ y, int K,
    int N, float eps)
{
    extern __shared__ uint4 xs[];
    __shared__ float partial[kGemvThreads / 32];
    int const kv = K / 8; // 16-byte vectors per row
    int const lane = threadIdx.x & 31;
    int const n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    bool const active = n < N; // every warp stages x' (and syncs) before the idle ones leave
    uint4 const* row = reinterpret_cast<uint4 const*>(w) + size_t(active ? n : 0) * kv;
    trtllm_kit::allow_dependents(); // the next multiply may start streaming its weights (launched with PDL)
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
        wv[u] = active && lane + u * 32 < kv ? __ldcs(row + lane + u * 32) : make_uint4(0, 0, 0, 0);
    trtllm_kit::wait_for_predecessor(); // x, g and r may come from the kernel before; y may be read by it
    stage_x<PRO, G>(xs, x, g, kv, eps, partial);
    if (!active)
        return;
    float acc = 0.f;
    for (int base = lane; base < kv; base += 32 * U)
    {
#pragma unroll
        for (int u = 0; u < U; ++u)
        {
            int const i = base + u * 32;
            if (i < kv)
            {
                uint4 const xv = xs[i];
                __half2 const* wh = reinterpret_cast<__half2 const*>(&wv[u]);
                __half2 const* xh = reinterpret_cast<__half2 const*>(&xv);
#pragma unroll
                for (int j = 0; j < 4; ++j)
                {
                    float2 const a = __half22float2(wh[j]), b = __half22float2(xh[j]);
                    acc += a.x * b.x + a.y * b.y;
                }
            }
        }
        int const next = base + 32 * U;
#pragma unroll
        for (int u = 0; u < U; ++u)
            wv[u] = next + u * 32 < kv ? __ldcs(row + next + u * 32) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0)
        y[n] = EPI ? __float2half_rn(trtllm_kit::round_to<__half>(acc) + __half2float(r[n])) : __float2half_rn(acc);
}

// pdl: launched with programmatic stream serialization (PDL), so that its blocks start, and issue their first
// weight loads, while the kernel before it finishes (that kernel's allow_dependents()); the kernel waits for it before
// touching x, g, r or y.
template <int PRO, int EPI, int U, typename G>
cudaError_t launch_gemv(bool pdl, void const* w, void const* x, void const* g, void const* r, void* y, int K, int N,
    float eps, cudaStream_t stream)
{
    size_t const smem = size_t(K) * sizeof(__half); // x' staged: within the 48 KB every kernel may take (gemv_fits)
    int const warps = kGemvThreads / 32;
    return trtllm_kit::launch_kernel(pdl, gemv_out_x_in<PRO, EPI, U, G>, dim3((N + warps - 1) / warps),
        dim3(kGemvThreads), smem, stream, static_cast<__half const*>(w), static_cast<__half const*>(x),
        static_cast<G const*>(g), static_cast<__half const*>(r), static_cast<__half*>(y), K, N, eps);
}

// How the decode GEMV is launched: the loads of w in flight per lane, and with PDL or not.
struct GemvLaunch
{
    int unroll = 4;
    bool pdl = false;
};

template <int PRO, int EPI, typename G>
cudaError_t gemv_unrolled(GemvLaunch const& l, void const* w, void const* x, void const* g, void const* r, void* y,
    int K, int N, float eps, cudaStream_t stream)
{
    switch (l.unroll)
    {
    case 8: return launch_gemv<PRO, EPI, 8, G>(l.pdl, w, x, g, r, y, K, N, eps, stream);
    case 16: return launch_gemv<PRO, EPI, 16, G>(l.pdl, w, x, g, r, y, K, N, eps, stream);
    default: return launch_gemv<PRO, EPI, 4, G>(l.pdl, w, x, g, r, y, K, N, eps, stream);
    }
}

template <int PRO, typename G>
cudaError_t gemv_epilogue(Folds const& f, GemvLaunch const& l, void const* w, void const* x, void const* g,
    void const* r, void* y, int K, int N, cudaStream_t stream)
{
    return f.epilogue ? gemv_unrolled<PRO, 1, G>(l, w, x, g, r, y, K, N, f.eps, stream)
                      : gemv_unrolled<PRO, 0, G>(l, w, x, g, r, y, K, N, f.eps, stream);
}

// Whether the GEMV takes this multiply: x' (M x K halves) and the kernel's own reduction buffer must fit the 48 KB of
// shared memory a kernel gets without opting in (K <= 24560 at one row; larger K, e.g. a 70B model's 28672-wide down
// projection, runs cuBLASLt).
bool gemv_fits(int64_t M, int64_t K)
{
    size_t const own = sizeof(float) * (kGemvThreads / 32); // gemv_out_x_in's static `partial`
    return M >= 1 && M <= kGemvMaxRows && K % 8 == 0
        && size_t(M) * size_t(K) * sizeof(__half) + own <= size_t(48) * 1024;
}

// The decode GEMV for one row; gType is the norm scale's type (prologue 1).
cudaError_t gemv(Folds const& f, GemvLaunch const& launch, nvinfer1::DataType gType, void const* w, void const* x, void const* g,
    void const* r, void* y, int64_t K, int64_t N, cudaStream_t stream)
{
    static_assert(kGemvMaxRows == 1, "the GEMV kernel computes one row");
    int const k = int(K), n = int(N);
    switch (f.prologue)
    {
    case kRmsNorm:
        return gType == nvinfer1::DataType::kFLOAT
            ? gemv_epilogue<kRmsNorm, float>(f, launch, w, x, g, r, y, k, n, stream)
            : gType == nvinfer1::DataType::kHALF ? gemv_epilogue<kRmsNorm, __half>(f, launch, w, x, g, r, y, k, n, stream)
                                                 : cudaErrorInvalidValue;
    case kSwiGlu: return gemv_epilogue<kSwiGlu, __half>(f, launch, w, x, g, r, y, k, n, stream);
    default: return gemv_epilogue<kNone, __half>(f, launch, w, x, g, r, y, k, n, stream);
    }
}

// The prologue for cuBLASLt: x' (M x K of T) into out, one block per row (RMSNorm) or one element per thread (SwiGLU).
template <typename T, typename G>
__global__ void __launch_bounds__(256) norm_rows(T const* __restrict__ x, G const* __restrict__ g,
    T* __restrict__ out, int K, float eps)
{
    __shared__ float partial[256 / 32];
    T const* xr = x + int64_t(blockIdx.x) * K;
    T* yr = out + int64_t(blockIdx.x) * K;
    float sum = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x)
    {
        float const v = trtllm_kit::to_f32(xr[i]);
        sum += v * v;
    }
    float const r = rsqrtf(block_sum(sum, partial) / float(K) + eps);
    for (int i = threadIdx.x; i < K; i += blockDim.x)
        yr[i] = trtllm_kit::from_f32<T>(trtllm_kit::round_to<T>(trtllm_kit::to_f32(xr[i]) * r) * trtllm_kit::to_f32(g[i]));
}

template <typename T>
__global__ void swiglu_rows(T const* __restrict__ x, T* __restrict__ out, int64_t M, int K)
{
    int64_t const i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= M * K)
        return;
    int64_t const m = i / K, k = i - m * K;
    T const* row = x + m * 2 * K;
    float const s = trtllm_kit::round_to<T>(silu(trtllm_kit::to_f32(row[k])));
    out[i] = trtllm_kit::from_f32<T>(s * trtllm_kit::to_f32(row[K + k]));
}

template <typename T>
cudaError_t prologue_typed(Folds const& f, nvinfer1::DataType gType, void const* x, void const* g, void* out,
    int64_t M, int K, cudaStream_t stream)
{
    if (f.prologue == kSwiGlu)
    {
        int64_t const blocks = (M * K + 255) / 256;
        if (blocks > 0x7fffffff)
            return cudaErrorInvalidValue;
        swiglu_rows<T><<<unsigned(blocks), 256, 0, stream>>>(static_cast<T const*>(x), static_cast<T*>(out), M, K);
        return cudaGetLastError();
    }
    if (M > 0x7fffffff)
        return cudaErrorInvalidValue;
    switch (gType)
    {
    case nvinfer1::DataType::kFLOAT:
        norm_rows<T, float><<<unsigned(M), 256, 0, stream>>>(static_cast<T const*>(x), static_cast<float const*>(g),
            static_cast<T*>(out), K, f.eps);
        break;
    case nvinfer1::DataType::kHALF:
        norm_rows<T, __half><<<unsigned(M), 256, 0, stream>>>(static_cast<T const*>(x), static_cast<__half const*>(g),
            static_cast<T*>(out), K, f.eps);
        break;
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16:
        norm_rows<T, __nv_bfloat16><<<unsigned(M), 256, 0, stream>>>(static_cast<T const*>(x),
            static_cast<__nv_bfloat16 const*>(g), static_cast<T*>(out), K, f.eps);
        break;
#endif
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

cudaError_t prologue(Folds const& f, nvinfer1::DataType type, nvinfer1::DataType gType, void const* x, void const* g,
    void* out, int64_t M, int64_t K, cudaStream_t stream)
{
    switch (type)
    {
    case nvinfer1::DataType::kHALF: return prologue_typed<__half>(f, gType, x, g, out, M, int(K), stream);
    case nvinfer1::DataType::kFLOAT: return prologue_typed<float>(f, gType, x, g, out, M, int(K), stream);
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16: return prologue_typed<__nv_bfloat16>(f, gType, x, g, out, M, int(K), stream);
#endif
    default: return cudaErrorInvalidValue;
    }
}

class GemmPlan
{
public:
    GemmPlan() = default;
    GemmPlan(GemmPlan const&) = delete;
    GemmPlan& operator=(GemmPlan const&) = delete;
    ~GemmPlan()
    {
        if (mD)
            cublasLtMatrixLayoutDestroy(mD);
        if (mB)
            cublasLtMatrixLayoutDestroy(mB);
        if (mA)
            cublasLtMatrixLayoutDestroy(mA);
        if (mOp)
            cublasLtMatmulDescDestroy(mOp);
    }

    // Descriptors and the heuristic's first algorithm; an empty string when ready, else why not.
    std::string make(cublasLtHandle_t lt, nvinfer1::DataType type, int64_t M, int64_t N, int64_t K, uint32_t align,
        int32_t layout)
    {
        cudaDataType_t const dt = cuda_type(type);
        cublasOperation_t const opN = CUBLAS_OP_N;
        cublasOperation_t const opA = layout == 1 ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasLtMatmulPreference_t pref = nullptr;
        std::string err;
        auto check = [&](cublasStatus_t s, char const* what) {
            if (s != CUBLAS_STATUS_SUCCESS && err.empty())
                err = std::string(what) + " failed with cuBLAS status " + std::to_string(int(s));
            return s == CUBLAS_STATUS_SUCCESS;
        };
        check(cublasLtMatmulDescCreate(&mOp, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
        if (err.empty())
        {
            check(cublasLtMatmulDescSetAttribute(mOp, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)), "TRANSA");
            check(cublasLtMatmulDescSetAttribute(mOp, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)), "TRANSB");
        }
        if (err.empty())
            check(layout == 1 ? cublasLtMatrixLayoutCreate(&mA, dt, uint64_t(K), uint64_t(N), K)
                              : cublasLtMatrixLayoutCreate(&mA, dt, uint64_t(N), uint64_t(K), N),
                "layout of w");
        if (err.empty())
            check(cublasLtMatrixLayoutCreate(&mB, dt, uint64_t(K), uint64_t(M), K), "layout of x");
        if (err.empty())
            check(cublasLtMatrixLayoutCreate(&mD, dt, uint64_t(N), uint64_t(M), N), "layout of y");
        if (err.empty())
            check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
        if (err.empty())
        {
            uint64_t const ws = kWorkspaceBytes;
            check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                "workspace preference");
            for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                     CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
                check(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)), "alignment preference");
        }
        if (err.empty())
        {
            cublasLtMatmulHeuristicResult_t result{};
            int found = 0;
            if (check(cublasLtMatmulAlgoGetHeuristic(lt, mOp, mA, mB, mD, mD, pref, 1, &result, &found),
                    "cublasLtMatmulAlgoGetHeuristic")
                && found == 0)
                err = "cuBLASLt has no algorithm for this shape";
            if (err.empty())
            {
                mAlgo = result.algo;
                mWorkspace = result.workspaceSize;
            }
        }
        if (pref)
            cublasLtMatmulPreferenceDestroy(pref);
        return err;
    }

    // y = x . op(w), plus c where c is not null (beta = 1: the residual epilogue; c laid out as y).
    cublasStatus_t run(cublasLtHandle_t lt, void const* w, void const* x, void const* c, void* y, void* workspace,
        cudaStream_t stream)
    {
        float const one = 1.0f, beta = c ? 1.0f : 0.0f;
        return cublasLtMatmul(lt, mOp, &one, w, mA, x, mB, &beta, c ? c : y, mD, y, mD, &mAlgo, workspace, mWorkspace,
            stream);
    }

private:
    cublasLtMatmulDesc_t mOp = nullptr;
    cublasLtMatrixLayout_t mA = nullptr, mB = nullptr, mD = nullptr;
    cublasLtMatmulAlgo_t mAlgo{};
    size_t mWorkspace = 0;
};

// The fields as serialized (16 bytes).
struct GemmFields
{
    int32_t layout = 0; // 0: w (K, N); 1: w (N, K)
    Folds folds;
};
static_assert(sizeof(GemmFields) == 16, "GemmFields is serialized as 16 bytes");

class GemmPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit GemmPlugin(GemmFields f) : mF(f)
    {
        char const* env = std::getenv("TRTLLM_KIT_GEMV");
        mGemv = !(env && std::strcmp(env, "0") == 0);
        char const* unroll = std::getenv("TRTLLM_KIT_GEMV_UNROLL");
        mLaunch.unroll = unroll ? std::atoi(unroll) : 4;
        mLaunch.pdl = trtllm_kit::pdl_enabled();
    }
    ~GemmPlugin() override { release(); }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override { release(); }
    size_t getSerializationSize() const noexcept override { return sizeof(GemmFields); }
    void serialize(void* buffer) const noexcept override { std::memcpy(buffer, &mF, sizeof(GemmFields)); }
    void destroy() noexcept override { delete this; }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

    // IPluginV2Ext
    nvinfer1::DataType getOutputDataType(
        int32_t /*index*/, nvinfer1::DataType const* inputTypes, int32_t /*nbInputs*/) const noexcept override
    {
        return inputTypes[0];
    }

    // IPluginV2DynamicExt
    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override
    {
        auto* p = new (std::nothrow) GemmPlugin(mF);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t /*outputIndex*/, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        nvinfer1::DimsExprs out = inputs[0];
        if (nbInputs >= 2 && out.nbDims >= 1 && inputs[1].nbDims == 2)
            out.d[out.nbDims - 1] = inputs[1].d[mF.layout == 1 ? 0 : 1];
        return out;
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != expectedInputs() || nbOutputs != 1 || pos < 0 || pos > nbInputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (pos == 0)
            return trtllm_kit::float_type(d.type);
        if (pos == scaleIndex())
            return trtllm_kit::float_type(d.type); // the norm's scale in whatever float type it comes (8.6 widens)
        return d.type == inOut[0].type;          // w, the residual, y: x's type
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        mConfigError.clear();
        if (nbInputs != expectedInputs() || nbOutputs != 1)
            mConfigError = "expected " + std::to_string(expectedInputs()) + " inputs (prologue "
                + std::to_string(mF.folds.prologue) + ", epilogue " + std::to_string(mF.folds.epilogue) + ") and 1 output";
        else if (in[0].desc.dims.nbDims < 1 || in[1].desc.dims.nbDims != 2)
            mConfigError = "x must have rank >= 1 and w rank 2";
        else
        {
            int32_t const k = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
            int32_t const kw = in[1].desc.dims.d[mF.layout == 1 ? 1 : 0];
            int32_t const want = mF.folds.prologue == kSwiGlu && kw >= 0 ? 2 * kw : kw;
            if (k >= 0 && kw >= 0 && k != want)
                mConfigError = "x's last dim " + std::to_string(k) + " is not " + (mF.folds.prologue == kSwiGlu ? "twice " : "")
                    + "w's " + (mF.layout == 1 ? "columns " : "rows ") + std::to_string(kw);
            int32_t const r = residualIndex();
            nvinfer1::Dims const& rd = r > 0 ? in[r].desc.dims : out[0].desc.dims;
            nvinfer1::Dims const& yd = out[0].desc.dims;
            if (mConfigError.empty() && rd.nbDims != yd.nbDims)
                mConfigError = "the residual's rank differs from y's";
            for (int32_t i = 0; mConfigError.empty() && i < yd.nbDims; ++i)
                if (rd.d[i] >= 0 && yd.d[i] >= 0 && rd.d[i] != yd.d[i]) // no broadcast
                    mConfigError = "the residual's axis " + std::to_string(i) + " is " + std::to_string(rd.d[i])
                        + ", y's " + std::to_string(yd.d[i]);
        }
        if (!mConfigError.empty())
            trtllm_kit::plugin_error(kGemmName, "%s", mConfigError.c_str());
    }

    // cuBLASLt's workspace, plus room for x' (the prologue's output, or x staged when TensorRT hands an address
    // that is not 16-byte aligned: seen on an H200, TensorRT 8.6, the first block's multiplies after a fused region
    // ran 5-50x slower than the others on cuBLASLt's unaligned kernels) and y staged, at their largest.
    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override
    {
        size_t staged = 0;
        if (nbInputs >= 2 && nbOutputs == 1)
            staged = round_up(bytes_of(inputs[0])) + round_up(bytes_of(outputs[0]));
        return kWorkspaceBytes + staged;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        if (!mConfigError.empty())
        {
            trtllm_kit::plugin_error(kGemmName, "%s", mConfigError.c_str());
            return 1;
        }
        nvinfer1::Dims const& xd = inputDesc[0].dims;
        nvinfer1::Dims const& wd = inputDesc[1].dims;
        int64_t const K = wd.d[mF.layout == 1 ? 1 : 0], N = wd.d[mF.layout == 1 ? 0 : 1];
        int64_t const xK = mF.folds.prologue == kSwiGlu ? 2 * K : K;
        int64_t M = 1;
        for (int32_t i = 0; i + 1 < xd.nbDims; ++i)
            M *= xd.d[i];
        if (xd.d[xd.nbDims - 1] != xK)
        {
            trtllm_kit::plugin_error(kGemmName, "x's last dim %d is not %lld (w's K %lld)", int(xd.d[xd.nbDims - 1]),
                (long long) xK, (long long) K);
            return 1;
        }
        int32_t const ri = residualIndex(), gi = scaleIndex();
        void const* res = ri > 0 ? inputs[ri] : nullptr;
        if (ri > 0)
        {
            int64_t const values = trtllm_kit::volume(inputDesc[ri].dims);
            if (values != M * N)
            {
                trtllm_kit::plugin_error(kGemmName, "the residual holds %lld values, not y's %lld", (long long) values,
                    (long long) (M * N));
                return 1;
            }
        }
        if (gi > 0)
        {
            int64_t const values = trtllm_kit::volume(inputDesc[gi].dims);
            if (values != K)
            {
                trtllm_kit::plugin_error(kGemmName, "the norm's scale holds %lld values, not K = %lld", (long long) values,
                    (long long) K);
                return 1;
            }
        }
        nvinfer1::DataType const gType = gi > 0 ? inputDesc[gi].type : nvinfer1::DataType::kHALF;
        void const* g = gi > 0 ? inputs[gi] : nullptr;
        if (M == 0 || N == 0)
            return 0;
        size_t const elem = inputDesc[0].type == nvinfer1::DataType::kFLOAT ? 4 : 2;
        if (K == 0) // x' @ w is zero: y is the residual, or zeros
            return (res ? cudaMemcpyAsync(outputs[0], res, size_t(M * N) * elem, cudaMemcpyDeviceToDevice, stream)
                        : cudaMemsetAsync(outputs[0], 0, size_t(M * N) * elem, stream))
                    == cudaSuccess
                ? 0
                : 1;
        char* ws = static_cast<char*>(workspace);
        void const* x = inputs[0];
        void* y = outputs[0];
        bool const stageY = alignment_of(y) < kMinAlignment;
        bool const gemvScale = gi < 0 || gType == nvinfer1::DataType::kHALF || gType == nvinfer1::DataType::kFLOAT;
        if (mGemv && mF.layout == 1 && inputDesc[0].type == nvinfer1::DataType::kHALF && gemv_fits(M, K) && gemvScale
            && alignment_of(x) >= 16 && alignment_of(inputs[1]) >= 16)
        {
            cudaError_t const e = gemv(mF.folds, mLaunch, gType, inputs[1], x, g, res, y, K, N, stream);
            if (e != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "the decode GEMV failed (M=%lld N=%lld K=%lld): %s", (long long) M,
                    (long long) N, (long long) K, cudaGetErrorString(e));
                return 1;
            }
            gGemvLaunches.fetch_add(1, std::memory_order_relaxed);
            return 0; // writes y one element at a time: any alignment
        }
        // x' into the workspace: the prologue's output, or an unaligned x staged (M x K elements, small beside w)
        if (mF.folds.prologue != kNone)
        {
            cudaError_t const e = prologue(mF.folds, inputDesc[0].type, gType, x, g, ws, M, K, stream);
            if (e != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "the %s prologue failed (M=%lld K=%lld): %s",
                    mF.folds.prologue == kSwiGlu ? "SwiGLU" : "RMSNorm", (long long) M, (long long) K, cudaGetErrorString(e));
                return 1;
            }
            x = ws;
            ws += round_up(size_t(M * K) * elem);
        }
        else if (alignment_of(x) < kMinAlignment)
        {
            if (cudaMemcpyAsync(ws, x, size_t(M * K) * elem, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "staging x failed");
                return 1;
            }
            x = ws;
            ws += round_up(size_t(M * K) * elem);
        }
        if (stageY)
        {
            y = ws;
            ws += round_up(size_t(M * N) * elem);
        }
        uint32_t align = alignment_of(x);
        for (void const* p : {inputs[1], static_cast<void const*>(y), static_cast<void const*>(ws), res ? res : x})
            align = std::min(align, alignment_of(p));
        GemmPlan* plan = nullptr;
        {
            std::lock_guard<std::mutex> lock(mMutex);
            if (!mLt && cublasLtCreate(&mLt) != CUBLAS_STATUS_SUCCESS)
            {
                mLt = nullptr;
                trtllm_kit::plugin_error(kGemmName, "cublasLtCreate failed");
                return 1;
            }
            Key const key{M, align, int(inputDesc[0].type)};
            auto it = mPlans.find(key);
            if (it == mPlans.end())
            {
                auto fresh = new (std::nothrow) GemmPlan();
                std::string const err = fresh ? fresh->make(mLt, inputDesc[0].type, M, N, K, align, mF.layout) : "out of memory";
                if (!err.empty())
                {
                    delete fresh;
                    trtllm_kit::plugin_error(kGemmName, "M=%lld N=%lld K=%lld: %s", (long long) M, (long long) N, (long long) K, err.c_str());
                    return 1;
                }
                it = mPlans.emplace(key, fresh).first;
                gPlansMade.fetch_add(1, std::memory_order_relaxed);
            }
            plan = it->second;
        }
        cublasStatus_t const s = plan->run(mLt, inputs[1], x, res, y, ws, stream);
        if (s != CUBLAS_STATUS_SUCCESS)
        {
            trtllm_kit::plugin_error(kGemmName, "cublasLtMatmul failed (M=%lld N=%lld K=%lld) with status %d", (long long) M, (long long) N,
                (long long) K, int(s));
            return 1;
        }
        if (stageY
            && cudaMemcpyAsync(outputs[0], y, size_t(M * N) * elem, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
        {
            trtllm_kit::plugin_error(kGemmName, "copying y out failed");
            return 1;
        }
        return 0;
    }

private:
    using Key = std::tuple<int64_t, uint32_t, int>;

    // x, w, then the norm's scale (prologue 1), then the residual (epilogue 1).
    int32_t expectedInputs() const { return 2 + (mF.folds.prologue == kRmsNorm) + (mF.folds.epilogue == 1); }
    int32_t scaleIndex() const { return mF.folds.prologue == kRmsNorm ? 2 : -1; }
    int32_t residualIndex() const { return mF.folds.epilogue == 1 ? expectedInputs() - 1 : -1; }

    void release() noexcept
    {
        std::lock_guard<std::mutex> lock(mMutex);
        for (auto& kv : mPlans)
            delete kv.second;
        mPlans.clear();
        if (mLt)
            cublasLtDestroy(mLt);
        mLt = nullptr;
    }

    GemmFields mF;
    bool mGemv = true; // the decode GEMV where it applies (TRTLLM_KIT_GEMV=0: cuBLASLt only)
    GemvLaunch mLaunch; // the GEMV's loads in flight per lane (TRTLLM_KIT_GEMV_UNROLL) and PDL (TRTLLM_KIT_PDL)
    std::string mNamespace;
    std::string mConfigError;
    std::mutex mMutex;
    cublasLtHandle_t mLt = nullptr;
    std::map<Key, GemmPlan*> mPlans;
};

// Why a field set cannot make a plugin, or an empty string.
std::string fields_error(GemmFields const& f)
{
    if (f.layout != 0 && f.layout != 1)
        return "w_layout is " + std::to_string(f.layout) + ", expected 0 (K x N) or 1 (N x K)";
    if (f.folds.prologue < kNone || f.folds.prologue > kSwiGlu)
        return "prologue is " + std::to_string(f.folds.prologue) + ", expected 0 (none), 1 (RMSNorm) or 2 (SwiGLU)";
    if (f.folds.epilogue != 0 && f.folds.epilogue != 1)
        return "epilogue is " + std::to_string(f.folds.epilogue) + ", expected 0 (none) or 1 (residual add)";
    if (!(f.folds.eps >= 0.f))
        return "eps must be >= 0";
    return "";
}

class GemmCreator final : public nvinfer1::IPluginCreator
{
public:
    GemmCreator()
    {
        for (char const* name : {"w_layout", "prologue", "epilogue"})
            mFields.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFields.emplace_back("eps", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
        mFieldCollection.nbFields = int32_t(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        GemmFields f;
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& p = fc->fields[i];
            if (!p.name || !p.data || p.length != 1)
                continue;
            if (p.type == nvinfer1::PluginFieldType::kINT32)
            {
                int32_t const v = *static_cast<int32_t const*>(p.data);
                if (std::strcmp(p.name, "w_layout") == 0)
                    f.layout = v;
                else if (std::strcmp(p.name, "prologue") == 0)
                    f.folds.prologue = v;
                else if (std::strcmp(p.name, "epilogue") == 0)
                    f.folds.epilogue = v;
            }
            else if (p.type == nvinfer1::PluginFieldType::kFLOAT32 && std::strcmp(p.name, "eps") == 0)
                f.folds.eps = *static_cast<float const*>(p.data);
        }
        std::string const err = fields_error(f);
        if (!err.empty())
        {
            trtllm_kit::plugin_error(kGemmName, "%s: %s", name ? name : "", err.c_str());
            return nullptr;
        }
        return make(f);
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        GemmFields f; // engines from before the folds serialized w_layout only (4 bytes), or nothing (0 bytes)
        if (length == sizeof(GemmFields))
            std::memcpy(&f, data, sizeof(GemmFields));
        else if (length == sizeof(int32_t))
            std::memcpy(&f.layout, data, sizeof(int32_t));
        std::string err = length != 0 && length != sizeof(int32_t) && length != sizeof(GemmFields)
            ? "serialized plugin has " + std::to_string(length) + " bytes, expected 16, 4 or 0"
            : fields_error(f);
        if (!err.empty())
        {
            trtllm_kit::plugin_error(kGemmName, "%s: %s", name ? name : "", err.c_str());
            return nullptr;
        }
        return make(f);
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    nvinfer1::IPluginV2* make(GemmFields f) const noexcept
    {
        auto* p = new (std::nothrow) GemmPlugin(f);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mNamespace;
};

} // namespace

REGISTER_TENSORRT_PLUGIN(GemmCreator);

// Diagnostics: the cuBLASLt version this library runs with (0 when cuBLASLt cannot say).
extern "C" size_t trtllmKitGemmCublasLtVersion()
{
    return cublasLtGetVersion();
}

extern "C" uint64_t trtllmKitGemmPlansMade()
{
    return gPlansMade.load(std::memory_order_relaxed);
}

extern "C" uint64_t trtllmKitGemvLaunches()
{
    return gGemvLaunches.load(std::memory_order_relaxed);
}

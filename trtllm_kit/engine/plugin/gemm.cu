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
//   2|3 cos, sin C (B, 1, S, hd)  epilogue 3 only: the rotary tables per position (C any float type), after g
// Output:
//   0 y   T  (..., N)   float32 accumulation, rounded to T; (..., N / 2) with epilogue 2
//   epilogue 3: 0 q T (B, rope_heads, S, hd), 1 k and 2 v T (B, rope_kv_heads, S, hd); x is (B, S, K)
// Fields (serialized as 32 bytes; engines from before the rotary epilogue: 16 bytes, before the folds: 4 bytes,
// w_layout only, or 0 bytes; what is missing reads as 0):
//   w_layout  int32  0 or 1, as above
//   prologue  int32  0: x as given; 1: RMSNorm of x, as transformers' LlamaRMSNorm (rms_norm.cu):
//                    x' = T(T(x * rsqrt(mean(x^2) + eps)) * g); 2: SwiGLU, as transformers' LlamaMLP:
//                    x' = T(T(silu(gate)) * up); 3: RMSNorm whose scale g the build multiplied into w's K axis
//                    (folds.py), no input g: y = (x . w'^T) * rsqrt(mean(x^2) + eps) on the GEMV (the statistic
//                    summed by each warp from the x it reads anyway: no pass over x before the first multiply-add;
//                    H200, llama-7b's batch-1 multiplies 3.37 ms a step against 3.53 with prologue 1,
//                    scripts/h200/decode_step_probe.cu, tenth session), x' = T(x * rsqrt(...)) before cuBLASLt
//   eps       float  prologue 1's epsilon
//   epilogue  int32  0: y = T(x' @ w); 1: y = T(T(x' @ w) + r) on the GEMV (eager's two roundings), T(x' @ w + r)
//                    on cuBLASLt (beta = 1: one rounding); 2: SwiGLU of the fused gate/up multiply, w's N outputs
//                    [gate | up]: y = T(T(silu(gate)) * up), gate = T(x' @ w)[..., :N/2], up the rest (on cuBLASLt
//                    the product goes to the workspace and one kernel applies it). Why: as the down multiply's
//                    prologue every GEMV block recomputed SwiGLU over all 11008 inputs before its first multiply-add
//                    (H200, llama-7b's batch-1 step: 3.79 ms of multiplies against 3.42 with it here,
//                    scripts/h200/decode_step_probe.cu, tenth session); 3: the rotary embedding of the fused q/k/v
//                    multiply, w's N = (rope_heads + 2 rope_kv_heads) * rope_head_dim outputs [q | k | v]: q and k
//                    rotated as the TrtllmKitRotary plugin does (rotary.cu, fused_qkv), q times rope_scale, v split
//                    off. On the GEMV a block's warps take the (d, d + hd/2) row pairs of a head and rotate them in
//                    shared memory (hd a multiple of 8); on cuBLASLt the product goes to the workspace and the rotary
//                    kernel splits it. Why: the rotary kernel between the q/k/v multiply and attention cost ~1.3 us
//                    a block at batch 1 (H200, llama-7b: 3.527 against 3.543 ms a step at 76 cached tokens,
//                    scripts/h200/decode_step_probe.cu, eleventh session)
//   rope_heads, rope_kv_heads, rope_head_dim  int32  epilogue 3's head counts and head_dim (even)
//   rope_scale float  epilogue 3's factor on q (head_dim ** -0.5)
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
#include "gemv.cuh"

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

using trtllm_kit::Folds;
using trtllm_kit::GemvLaunch;
using trtllm_kit::kNone;
using trtllm_kit::kPlain;
using trtllm_kit::kResidual;
using trtllm_kit::kSwiGluPair;
using trtllm_kit::kRope;
using trtllm_kit::GemvRope;
using trtllm_kit::gemv_rope_fits;
using trtllm_kit::kRmsNorm;
using trtllm_kit::kRmsNormFolded;
using trtllm_kit::kSwiGlu;
using trtllm_kit::block_sum;
using trtllm_kit::gemv_fits;
using trtllm_kit::silu;

// The decode GEMV for one row; gType is the norm scale's type (prologue 1: half or float).
cudaError_t gemv(Folds const& f, GemvLaunch const& launch, nvinfer1::DataType gType, void const* w, void const* x, void const* g,
    void const* r, void* y, int64_t K, int64_t N, cudaStream_t stream)
{
    if (f.prologue == kRmsNorm && gType != nvinfer1::DataType::kFLOAT && gType != nvinfer1::DataType::kHALF)
        return cudaErrorInvalidValue;
    return trtllm_kit::gemv_folded(f, launch, gType == nvinfer1::DataType::kFLOAT, w, x, g, r, y, int(K), int(N), stream);
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
        yr[i] = g ? trtllm_kit::from_f32<T>(trtllm_kit::round_to<T>(trtllm_kit::to_f32(xr[i]) * r) * trtllm_kit::to_f32(g[i]))
                  : trtllm_kit::from_f32<T>(trtllm_kit::to_f32(xr[i]) * r); // the scale is in w (prologue 3)
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
    if (f.prologue == kRmsNormFolded)
    {
        norm_rows<T, T><<<unsigned(M), 256, 0, stream>>>(static_cast<T const*>(x), nullptr, static_cast<T*>(out), K,
            f.eps);
        return cudaGetLastError();
    }
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

// The fields as serialized (32 bytes; the first 16 are what engines before the rotary epilogue hold).
struct GemmFields
{
    int32_t layout = 0; // 0: w (K, N); 1: w (N, K)
    Folds folds;
    int32_t rope_heads = 0, rope_kv_heads = 0, rope_head_dim = 0; // epilogue 3
    float rope_scale = 1.f;
};
static_assert(sizeof(GemmFields) == 32, "GemmFields is serialized as 32 bytes");
constexpr size_t kFieldsBeforeRope = 16;

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
    int32_t getNbOutputs() const noexcept override { return rope() ? 3 : 1; }
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

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        if (rope()) // x (B, S, K) -> q (B, heads, S, hd), k and v (B, kv_heads, S, hd)
        {
            nvinfer1::DimsExprs out;
            out.nbDims = 4;
            out.d[0] = inputs[0].d[0];
            out.d[1] = exprBuilder.constant(outputIndex == 0 ? mF.rope_heads : mF.rope_kv_heads);
            out.d[2] = inputs[0].nbDims >= 2 ? inputs[0].d[1] : exprBuilder.constant(1);
            out.d[3] = exprBuilder.constant(mF.rope_head_dim);
            return out;
        }
        nvinfer1::DimsExprs out = inputs[0];
        if (nbInputs >= 2 && out.nbDims >= 1 && inputs[1].nbDims == 2)
        {
            nvinfer1::IDimensionExpr const* n = inputs[1].d[mF.layout == 1 ? 0 : 1];
            if (mF.folds.epilogue == kSwiGluPair) // [gate | up] -> silu(gate) * up
                n = exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *n, *exprBuilder.constant(2));
            out.d[out.nbDims - 1] = n;
        }
        return out;
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != expectedInputs() || nbOutputs != getNbOutputs() || pos < 0 || pos >= nbInputs + nbOutputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (pos == 0)
            return trtllm_kit::float_type(d.type);
        if (pos == scaleIndex() || pos == tableIndex())
            return trtllm_kit::float_type(d.type); // the norm's scale, the tables: any float type (8.6 widens)
        if (tableIndex() > 0 && pos == tableIndex() + 1)
            return d.type == inOut[tableIndex()].type; // sin: cos's type
        return d.type == inOut[0].type;          // w, the residual, y (q, k, v): x's type
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        mConfigError.clear();
        if (nbInputs != expectedInputs() || nbOutputs != getNbOutputs())
            mConfigError = "expected " + std::to_string(expectedInputs()) + " inputs (prologue "
                + std::to_string(mF.folds.prologue) + ", epilogue " + std::to_string(mF.folds.epilogue) + ") and "
                + std::to_string(getNbOutputs()) + " output(s)";
        else if (in[0].desc.dims.nbDims < 1 || in[1].desc.dims.nbDims != 2)
            mConfigError = "x must have rank >= 1 and w rank 2";
        else if (rope() && in[0].desc.dims.nbDims != 3)
            mConfigError = "the rotary epilogue needs x as (batch, positions, K)";
        else
        {
            int32_t const k = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
            int32_t const kw = in[1].desc.dims.d[mF.layout == 1 ? 1 : 0];
            int32_t const nw = in[1].desc.dims.d[mF.layout == 1 ? 0 : 1];
            if (mF.folds.epilogue == kSwiGluPair && nw >= 0 && nw % 2 != 0)
                mConfigError = "the SwiGLU epilogue needs w's [gate | up] outputs, an even count; w has " + std::to_string(nw);
            int64_t const qkv = int64_t(mF.rope_heads + 2 * mF.rope_kv_heads) * mF.rope_head_dim;
            if (rope() && nw >= 0 && nw != qkv)
                mConfigError = "the rotary epilogue needs w's [q | k | v] outputs, " + std::to_string(qkv) + "; w has "
                    + std::to_string(nw);
            int32_t const want = mF.folds.prologue == kSwiGlu && kw >= 0 ? 2 * kw : kw;
            if (mConfigError.empty() && k >= 0 && kw >= 0 && k != want)
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
        if (nbInputs >= 2 && nbOutputs == 3 && rope()) // y staged: [q | k | v], split by the rotary kernel
            staged = round_up(bytes_of(inputs[0])) + round_up(bytes_of(outputs[0]) + 2 * bytes_of(outputs[1]));
        else if (nbInputs >= 2 && nbOutputs == 1) // y staged: the whole [gate | up] product with epilogue 2
            staged = round_up(bytes_of(inputs[0]))
                + round_up(bytes_of(outputs[0]) * (mF.folds.epilogue == kSwiGluPair ? 2 : 1));
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
        bool const swiglu = mF.folds.epilogue == kSwiGluPair;
        int64_t const Ny = swiglu ? N / 2 : N; // y's last dim
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
        bool const rotary = rope();
        int32_t const ti = tableIndex();
        int const hd = mF.rope_head_dim;
        if (rotary)
        {
            int64_t const qkv = int64_t(mF.rope_heads + 2 * mF.rope_kv_heads) * hd;
            if (xd.nbDims != 3 || N != qkv || trtllm_kit::volume(inputDesc[ti].dims) != M * hd
                || trtllm_kit::volume(inputDesc[ti + 1].dims) != M * hd)
            {
                trtllm_kit::plugin_error(kGemmName, "the rotary epilogue needs x (B, S, K), w with %lld outputs and "
                    "cos/sin of (B, S) x %d values", (long long) qkv, hd);
                return 1;
            }
        }
        if (M == 0 || Ny == 0)
            return 0;
        size_t const elem = inputDesc[0].type == nvinfer1::DataType::kFLOAT ? 4 : 2;
        if (K == 0 && rotary) // x' @ w is zero, and so is its rotation
        {
            size_t const qb = size_t(M) * mF.rope_heads * hd * elem, kb = size_t(M) * mF.rope_kv_heads * hd * elem;
            return cudaMemsetAsync(outputs[0], 0, qb, stream) == cudaSuccess
                    && cudaMemsetAsync(outputs[1], 0, kb, stream) == cudaSuccess
                    && cudaMemsetAsync(outputs[2], 0, kb, stream) == cudaSuccess
                ? 0
                : 1;
        }
        if (K == 0) // x' @ w is zero: y is the residual, or zeros (silu(0) * 0 with epilogue 2)
            return (res ? cudaMemcpyAsync(outputs[0], res, size_t(M * N) * elem, cudaMemcpyDeviceToDevice, stream)
                        : cudaMemsetAsync(outputs[0], 0, size_t(M * Ny) * elem, stream))
                    == cudaSuccess
                ? 0
                : 1;
        char* ws = static_cast<char*>(workspace);
        void const* x = inputs[0];
        void* y = outputs[0];
        bool const stageY = alignment_of(y) < kMinAlignment;
        bool const gemvScale = gi < 0 || gType == nvinfer1::DataType::kHALF || gType == nvinfer1::DataType::kFLOAT;
        bool const gemvRope = !rotary
            || (gemv_rope_fits(hd)
                && (inputDesc[ti].type == nvinfer1::DataType::kHALF || inputDesc[ti].type == nvinfer1::DataType::kFLOAT));
        if (mGemv && mF.layout == 1 && inputDesc[0].type == nvinfer1::DataType::kHALF && gemv_fits(M, K) && gemvScale
            && gemvRope && alignment_of(x) >= 16 && alignment_of(inputs[1]) >= 16)
        {
            GemvLaunch launch = mLaunch;
            if (rotary)
            {
                launch.rope = GemvRope{outputs[0], outputs[1], outputs[2], inputs[ti], inputs[ti + 1],
                    inputDesc[ti].type == nvinfer1::DataType::kFLOAT, mF.rope_heads, mF.rope_kv_heads, hd,
                    mF.rope_scale};
                y = nullptr;
            }
            cudaError_t const e = gemv(mF.folds, launch, gType, inputs[1], x, g, res, y, K, Ny, stream);
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
        if (stageY || swiglu || rotary) // epilogues 2 and 3: the product first, then its epilogue into the outputs
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
        if (rotary)
        {
            void const* in[3] = {y, inputs[ti], inputs[ti + 1]};
            cudaError_t const e = trtllm_kit::launch_rotary_as(inputDesc[0].type, inputDesc[ti].type, in, outputs, true,
                M, int(xd.d[1]), mF.rope_heads, mF.rope_kv_heads, hd, mF.rope_scale, stream);
            if (e != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "the rotary epilogue failed (M=%lld N=%lld): %s", (long long) M,
                    (long long) N, cudaGetErrorString(e));
                return 1;
            }
        }
        else if (swiglu)
        {
            Folds const f{kSwiGlu, 0.f, kPlain};
            cudaError_t const e = prologue(f, inputDesc[0].type, gType, y, nullptr, outputs[0], M, Ny, stream);
            if (e != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "the SwiGLU epilogue failed (M=%lld N=%lld): %s", (long long) M,
                    (long long) N, cudaGetErrorString(e));
                return 1;
            }
        }
        else if (stageY
            && cudaMemcpyAsync(outputs[0], y, size_t(M * N) * elem, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
        {
            trtllm_kit::plugin_error(kGemmName, "copying y out failed");
            return 1;
        }
        return 0;
    }

private:
    using Key = std::tuple<int64_t, uint32_t, int>;

    // x, w, then the norm's scale (prologue 1), then the residual (epilogue 1) or cos and sin (epilogue 3).
    // (prologue 3, RMSNorm with its scale in w's columns, has no scale input)
    bool rope() const { return mF.folds.epilogue == kRope; }
    int32_t expectedInputs() const
    {
        return 2 + (mF.folds.prologue == kRmsNorm) + (mF.folds.epilogue == kResidual) + (rope() ? 2 : 0);
    }
    int32_t scaleIndex() const { return mF.folds.prologue == kRmsNorm ? 2 : -1; }
    int32_t residualIndex() const { return mF.folds.epilogue == kResidual ? expectedInputs() - 1 : -1; }
    int32_t tableIndex() const { return rope() ? 2 + (mF.folds.prologue == kRmsNorm) : -1; }

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
    if (f.folds.prologue < kNone || f.folds.prologue > kRmsNormFolded)
        return "prologue is " + std::to_string(f.folds.prologue)
            + ", expected 0 (none), 1 (RMSNorm), 2 (SwiGLU) or 3 (RMSNorm, its scale in w)";
    if (f.folds.epilogue < kPlain || f.folds.epilogue > kRope)
        return "epilogue is " + std::to_string(f.folds.epilogue)
            + ", expected 0 (none), 1 (residual add), 2 (SwiGLU of [gate | up]) or 3 (rotary of [q | k | v])";
    if (f.folds.epilogue == kRope
        && (f.rope_heads <= 0 || f.rope_kv_heads <= 0 || f.rope_head_dim <= 0 || f.rope_head_dim % 2 != 0))
        return "the rotary epilogue needs rope_heads and rope_kv_heads > 0 and an even rope_head_dim > 0";
    if (!(f.folds.eps >= 0.f))
        return "eps must be >= 0";
    return "";
}

class GemmCreator final : public nvinfer1::IPluginCreator
{
public:
    GemmCreator()
    {
        for (char const* name : {"w_layout", "prologue", "epilogue", "rope_heads", "rope_kv_heads", "rope_head_dim"})
            mFields.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFields.emplace_back("eps", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("rope_scale", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
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
                else if (std::strcmp(p.name, "rope_heads") == 0)
                    f.rope_heads = v;
                else if (std::strcmp(p.name, "rope_kv_heads") == 0)
                    f.rope_kv_heads = v;
                else if (std::strcmp(p.name, "rope_head_dim") == 0)
                    f.rope_head_dim = v;
            }
            else if (p.type == nvinfer1::PluginFieldType::kFLOAT32 && std::strcmp(p.name, "eps") == 0)
                f.folds.eps = *static_cast<float const*>(p.data);
            else if (p.type == nvinfer1::PluginFieldType::kFLOAT32 && std::strcmp(p.name, "rope_scale") == 0)
                f.rope_scale = *static_cast<float const*>(p.data);
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
        // engines from before the rotary epilogue serialized 16 bytes, before the folds w_layout only (4 bytes), or
        // nothing (0 bytes)
        GemmFields f;
        if (length == sizeof(GemmFields) || length == kFieldsBeforeRope)
            std::memcpy(&f, data, length);
        else if (length == sizeof(int32_t))
            std::memcpy(&f.layout, data, sizeof(int32_t));
        std::string err = length != 0 && length != sizeof(int32_t) && length != kFieldsBeforeRope
                && length != sizeof(GemmFields)
            ? "serialized plugin has " + std::to_string(length) + " bytes, expected 32, 16, 4 or 0"
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

// TrtllmKitGemm: y = x @ w for a weight matrix that is an engine input, computed by cuBLASLt, as a
// TensorRT IPluginV2DynamicExt that builds against the TensorRT 8.6 and 10.x headers.
//
// Why: TensorRT 8.6 builds the plugin KV layout at optimization level 0, where every MatrixMultiply
// runs the first kernel that works (H200, llama-7b at batch 16: 0.37 ms per 4096x11008 weight, 0.24
// TB/s); cuBLASLt's heuristics pick a kernel per shape with no timing at build time.
//
// Inputs (linear layout; T = half, float, or bf16 where TensorRT has it; x and w of one type):
//   0 x   T  (..., K)   activations, any rank >= 1; M = product of the leading dims
//   1 w   T  (K, N)     row-major, as the exporter stores a Linear's weight (in x out; field w_layout = 0), or
//            (N, K)     PyTorch's nn.Linear layout (out x in; w_layout = 1)
// Output:
//   0 y   T  (..., N)   float32 accumulation, rounded to T
// Field: w_layout (int32, 0 or 1; 0 when absent), serialized as 4 bytes (engines from before it: 0 bytes, read as 0).
//
// cuBLASLt is column-major: y^T (N x M) = op(A) (N x K) . x^T (K x M), B = x viewed as K x M with leading dimension
// K. w_layout 0: A = w viewed as N x K with leading dimension N, no transpose; 1: A = w viewed as K x N with leading
// dimension K, transposed.
// Decode GEMV: with w_layout 1, fp16, one row (M = 1: batch-1 decode), K a multiple of 8 and at most 24576 (x in 48 KB
// of shared memory) and 16-byte aligned x and w,
// the plugin runs its own kernel instead (one warp per output, 16-byte streaming loads of w; H200: llama-7b's fused
// decode step's multiplies at 3.88 TB/s against cuBLAS's 3.60, scripts/h200/gemv_probe.cu; the llama-7b engine's
// batch-1 step 4.21 ms against 4.47 with cuBLASLt, eighth session). TRTLLM_KIT_GEMV=0 (read when the plugin is created)
// keeps cuBLASLt.
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
constexpr int kGemvUnroll = 4;    // 16-byte loads of w in flight per thread

// y (M x N) = x (M x K) . w^T, w (N x K) row-major, fp16 in and out, float accumulation. One warp per output n: its
// lanes stream w's row n in 16-byte vectors (evict-first: read once per step) and multiply them by every row of x,
// staged in shared memory (M x K halves); a warp-shuffle sum per row of x.
template <int M>
__global__ void gemv_out_x_in(__half const* __restrict__ w, __half const* __restrict__ x, __half* __restrict__ y,
    int K, int N)
{
    extern __shared__ uint4 xs[];
    int const kv = K / 8; // 16-byte vectors per row
    for (int i = threadIdx.x; i < M * kv; i += blockDim.x)
        xs[i] = reinterpret_cast<uint4 const*>(x)[i];
    __syncthreads();
    int const lane = threadIdx.x & 31;
    int const n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (n >= N)
        return;
    uint4 const* row = reinterpret_cast<uint4 const*>(w) + size_t(n) * kv;
    float acc[M] = {};
    for (int base = lane; base < kv; base += 32 * kGemvUnroll)
    {
        uint4 wv[kGemvUnroll];
#pragma unroll
        for (int u = 0; u < kGemvUnroll; ++u)
            wv[u] = base + u * 32 < kv ? __ldcs(row + base + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < kGemvUnroll; ++u)
        {
            int const i = base + u * 32;
            if (i >= kv)
                break;
            __half2 const* wh = reinterpret_cast<__half2 const*>(&wv[u]);
#pragma unroll
            for (int m = 0; m < M; ++m)
            {
                uint4 const xv = xs[m * kv + i];
                __half2 const* xh = reinterpret_cast<__half2 const*>(&xv);
#pragma unroll
                for (int j = 0; j < 4; ++j)
                {
                    float2 const a = __half22float2(wh[j]), b = __half22float2(xh[j]);
                    acc[m] += a.x * b.x + a.y * b.y;
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < M; ++m)
    {
        float v = acc[m];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            y[size_t(m) * N + n] = __float2half_rn(v);
    }
}

template <int M>
cudaError_t launch_gemv(void const* w, void const* x, void* y, int K, int N, cudaStream_t stream)
{
    size_t const smem = size_t(M) * K * sizeof(__half); // x staged: within the 48 KB every kernel may take (gemv_fits)
    int const warps = kGemvThreads / 32;
    gemv_out_x_in<M><<<(N + warps - 1) / warps, kGemvThreads, smem, stream>>>(static_cast<__half const*>(w),
        static_cast<__half const*>(x), static_cast<__half*>(y), K, N);
    return cudaGetLastError();
}

// Whether the GEMV takes this multiply: x (M x K halves) must fit the 48 KB of shared memory a kernel gets without
// opting in (K <= 24576 at one row; larger K, e.g. a 70B model's 28672-wide down projection, runs cuBLASLt).
bool gemv_fits(int64_t M, int64_t K)
{
    return M >= 1 && M <= kGemvMaxRows && K % 8 == 0 && size_t(M) * size_t(K) * sizeof(__half) <= size_t(48) * 1024;
}

cudaError_t gemv(int64_t M, void const* w, void const* x, void* y, int64_t K, int64_t N, cudaStream_t stream)
{
    static_assert(kGemvMaxRows == 1, "instantiate launch_gemv for each row count allowed");
    return M == 1 ? launch_gemv<1>(w, x, y, int(K), int(N), stream) : cudaErrorInvalidValue;
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

    cublasStatus_t run(cublasLtHandle_t lt, void const* w, void const* x, void* y, void* workspace, cudaStream_t stream)
    {
        float const one = 1.0f, zero = 0.0f;
        return cublasLtMatmul(lt, mOp, &one, w, mA, x, mB, &zero, y, mD, y, mD, &mAlgo, workspace, mWorkspace, stream);
    }

private:
    cublasLtMatmulDesc_t mOp = nullptr;
    cublasLtMatrixLayout_t mA = nullptr, mB = nullptr, mD = nullptr;
    cublasLtMatmulAlgo_t mAlgo{};
    size_t mWorkspace = 0;
};

class GemmPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit GemmPlugin(int32_t layout) : mLayout(layout)
    {
        char const* env = std::getenv("TRTLLM_KIT_GEMV");
        mGemv = !(env && std::strcmp(env, "0") == 0);
    }
    ~GemmPlugin() override { release(); }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override { release(); }
    size_t getSerializationSize() const noexcept override { return sizeof(int32_t); }
    void serialize(void* buffer) const noexcept override { std::memcpy(buffer, &mLayout, sizeof(int32_t)); }
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
        auto* p = new (std::nothrow) GemmPlugin(mLayout);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t /*outputIndex*/, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        nvinfer1::DimsExprs out = inputs[0];
        if (nbInputs == 2 && out.nbDims >= 1 && inputs[1].nbDims == 2)
            out.d[out.nbDims - 1] = inputs[1].d[mLayout == 1 ? 0 : 1];
        return out;
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos > 2)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        return pos == 0 ? trtllm_kit::float_type(d.type) : d.type == inOut[0].type;
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        mConfigError.clear();
        if (nbInputs != 2 || nbOutputs != 1)
            mConfigError = "expected 2 inputs and 1 output";
        else if (in[0].desc.dims.nbDims < 1 || in[1].desc.dims.nbDims != 2)
            mConfigError = "x must have rank >= 1 and w rank 2";
        else
        {
            int32_t const k = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
            int32_t const kw = in[1].desc.dims.d[mLayout == 1 ? 1 : 0];
            if (k >= 0 && kw >= 0 && k != kw)
                mConfigError = "x's last dim " + std::to_string(k) + " differs from w's " + (mLayout == 1 ? "columns " : "rows ")
                    + std::to_string(kw);
        }
        if (!mConfigError.empty())
            trtllm_kit::plugin_error(kGemmName, "%s", mConfigError.c_str());
    }

    // cuBLASLt's workspace, plus room to stage x and y (at their largest) when TensorRT hands an address that
    // is not 16-byte aligned (seen on an H200, TensorRT 8.6: the first block's multiplies after a fused region
    // ran 5-50x slower than the others, on cuBLASLt's unaligned kernels).
    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override
    {
        size_t staged = 0;
        if (nbInputs == 2 && nbOutputs == 1)
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
        int64_t const K = wd.d[mLayout == 1 ? 1 : 0], N = wd.d[mLayout == 1 ? 0 : 1];
        int64_t M = 1;
        for (int32_t i = 0; i + 1 < xd.nbDims; ++i)
            M *= xd.d[i];
        if (xd.d[xd.nbDims - 1] != K)
        {
            trtllm_kit::plugin_error(kGemmName, "x's last dim %d differs from w's K %lld", int(xd.d[xd.nbDims - 1]), (long long) K);
            return 1;
        }
        if (M == 0 || N == 0)
            return 0;
        size_t const elem = inputDesc[0].type == nvinfer1::DataType::kFLOAT ? 4 : 2;
        if (K == 0)
            return cudaMemsetAsync(outputs[0], 0, size_t(M * N) * elem, stream) == cudaSuccess ? 0 : 1;
        // Stage an unaligned x or y through the workspace (a copy of M x K or M x N elements, small beside w).
        char* ws = static_cast<char*>(workspace);
        void const* x = inputs[0];
        void* y = outputs[0];
        if (alignment_of(x) < kMinAlignment)
        {
            if (cudaMemcpyAsync(ws, x, size_t(M * K) * elem, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "staging x failed");
                return 1;
            }
            x = ws;
            ws += round_up(size_t(M * K) * elem);
        }
        bool const stageY = alignment_of(y) < kMinAlignment;
        if (stageY)
        {
            y = ws;
            ws += round_up(size_t(M * N) * elem);
        }
        auto copyOut = [&]() {
            if (stageY
                && cudaMemcpyAsync(outputs[0], y, size_t(M * N) * elem, cudaMemcpyDeviceToDevice, stream) != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "copying y out failed");
                return 1;
            }
            return 0;
        };
        if (mGemv && mLayout == 1 && inputDesc[0].type == nvinfer1::DataType::kHALF && gemv_fits(M, K)
            && alignment_of(x) >= 16 && alignment_of(inputs[1]) >= 16)
        {
            cudaError_t const e = gemv(M, inputs[1], x, y, K, N, stream);
            if (e != cudaSuccess)
            {
                trtllm_kit::plugin_error(kGemmName, "the decode GEMV failed (M=%lld N=%lld K=%lld): %s", (long long) M,
                    (long long) N, (long long) K, cudaGetErrorString(e));
                return 1;
            }
            gGemvLaunches.fetch_add(1, std::memory_order_relaxed);
            return copyOut();
        }
        uint32_t align = alignment_of(x);
        for (void const* p : {inputs[1], static_cast<void const*>(y), static_cast<void const*>(ws)})
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
                std::string const err = fresh ? fresh->make(mLt, inputDesc[0].type, M, N, K, align, mLayout) : "out of memory";
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
        cublasStatus_t const s = plan->run(mLt, inputs[1], x, y, ws, stream);
        if (s != CUBLAS_STATUS_SUCCESS)
        {
            trtllm_kit::plugin_error(kGemmName, "cublasLtMatmul failed (M=%lld N=%lld K=%lld) with status %d", (long long) M, (long long) N,
                (long long) K, int(s));
            return 1;
        }
        return copyOut();
    }

private:
    using Key = std::tuple<int64_t, uint32_t, int>;

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

    int32_t mLayout = 0; // 0: w (K, N); 1: w (N, K)
    bool mGemv = true;   // the decode GEMV where it applies (TRTLLM_KIT_GEMV=0: cuBLASLt only)
    std::string mNamespace;
    std::string mConfigError;
    std::mutex mMutex;
    cublasLtHandle_t mLt = nullptr;
    std::map<Key, GemmPlan*> mPlans;
};

class GemmCreator final : public nvinfer1::IPluginCreator
{
public:
    GemmCreator()
    {
        mFields.emplace_back("w_layout", nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFieldCollection.nbFields = int32_t(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        int32_t layout = 0;
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            if (f.name && std::strcmp(f.name, "w_layout") == 0 && f.type == nvinfer1::PluginFieldType::kINT32
                && f.length == 1 && f.data)
                layout = *static_cast<int32_t const*>(f.data);
        }
        if (layout != 0 && layout != 1)
        {
            trtllm_kit::plugin_error(kGemmName, "%s: w_layout is %d, expected 0 (K x N) or 1 (N x K)", name ? name : "", int(layout));
            return nullptr;
        }
        return make(layout);
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        int32_t layout = 0; // engines from before the field serialized nothing
        if (length == sizeof(int32_t))
            std::memcpy(&layout, data, sizeof(int32_t));
        if ((length != 0 && length != sizeof(int32_t)) || (layout != 0 && layout != 1))
        {
            trtllm_kit::plugin_error(kGemmName, "%s: serialized plugin has %zu bytes (w_layout %d), expected 4 (0 or 1)",
                name ? name : "", length, int(layout));
            return nullptr;
        }
        return make(layout);
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    nvinfer1::IPluginV2* make(int32_t layout) const noexcept
    {
        auto* p = new (std::nothrow) GemmPlugin(layout);
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

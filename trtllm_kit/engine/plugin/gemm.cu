// TrtllmKitGemm: y = x @ w for a weight matrix that is an engine input, computed by cuBLASLt, as a
// TensorRT IPluginV2DynamicExt that builds against the TensorRT 8.6 and 10.x headers.
//
// Why: TensorRT 8.6 builds the plugin KV layout at optimization level 0, where every MatrixMultiply
// runs the first kernel that works (H200, llama-7b at batch 16: 0.37 ms per 4096x11008 weight, 0.24
// TB/s); cuBLASLt's heuristics pick a kernel per shape with no timing at build time.
//
// Inputs (linear layout; T = half, float, or bf16 where TensorRT has it; x and w of one type):
//   0 x   T  (..., K)   activations, any rank >= 1; M = product of the leading dims
//   1 w   T  (K, N)     row-major, as the exporter stores a Linear's weight (transposed, in x out)
// Output:
//   0 y   T  (..., N)   float32 accumulation, rounded to T
//
// cuBLASLt is column-major: y^T (N x M) = w^T (N x K) . x^T (K x M), i.e. A = w viewed as N x K with
// leading dimension N, B = x viewed as K x M with leading dimension K, no transposes.
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
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

namespace
{

constexpr char const* kGemmName = "TrtllmKitGemm";
constexpr char const* kGemmVersion = "1";
constexpr size_t kWorkspaceBytes = size_t(32) << 20; // cuBLASLt's recommendation for Hopper

// Diagnostics: cuBLASLt plans made so far in this process (a count that grows while a model decodes at one
// batch size means plans are being remade every step: host time that an IProfiler charges to the layer).
std::atomic<uint64_t> gPlansMade{0};

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
    std::string make(cublasLtHandle_t lt, nvinfer1::DataType type, int64_t M, int64_t N, int64_t K, uint32_t align)
    {
        cudaDataType_t const dt = cuda_type(type);
        cublasOperation_t const opN = CUBLAS_OP_N;
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
            check(cublasLtMatmulDescSetAttribute(mOp, CUBLASLT_MATMUL_DESC_TRANSA, &opN, sizeof(opN)), "TRANSA");
            check(cublasLtMatmulDescSetAttribute(mOp, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)), "TRANSB");
        }
        if (err.empty())
            check(cublasLtMatrixLayoutCreate(&mA, dt, uint64_t(N), uint64_t(K), N), "layout of w");
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
    GemmPlugin() = default;
    ~GemmPlugin() override { release(); }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override { release(); }
    size_t getSerializationSize() const noexcept override { return 0; }
    void serialize(void* /*buffer*/) const noexcept override {}
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
        auto* p = new (std::nothrow) GemmPlugin();
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t /*outputIndex*/, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        nvinfer1::DimsExprs out = inputs[0];
        if (nbInputs == 2 && out.nbDims >= 1 && inputs[1].nbDims == 2)
            out.d[out.nbDims - 1] = inputs[1].d[1];
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
            int32_t const k = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1], kw = in[1].desc.dims.d[0];
            if (k >= 0 && kw >= 0 && k != kw)
                mConfigError = "x's last dim " + std::to_string(k) + " differs from w's rows " + std::to_string(kw);
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
        int64_t const K = wd.d[0], N = wd.d[1];
        int64_t M = 1;
        for (int32_t i = 0; i + 1 < xd.nbDims; ++i)
            M *= xd.d[i];
        if (xd.d[xd.nbDims - 1] != K)
        {
            trtllm_kit::plugin_error(kGemmName, "x's last dim %d differs from w's rows %lld", int(xd.d[xd.nbDims - 1]), (long long) K);
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
                std::string const err = fresh ? fresh->make(mLt, inputDesc[0].type, M, N, K, align) : "out of memory";
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
        mFieldCollection.nbFields = 0;
        mFieldCollection.fields = nullptr;
    }

    char const* getPluginName() const noexcept override { return kGemmName; }
    char const* getPluginVersion() const noexcept override { return kGemmVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* /*name*/, nvinfer1::PluginFieldCollection const* /*fc*/) noexcept override
    {
        return make();
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* /*data*/, size_t length) noexcept override
    {
        if (length != 0)
        {
            trtllm_kit::plugin_error(kGemmName, "%s: serialized plugin has %zu bytes, expected 0", name ? name : "", length);
            return nullptr;
        }
        return make();
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    nvinfer1::IPluginV2* make() const noexcept
    {
        auto* p = new (std::nothrow) GemmPlugin();
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

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

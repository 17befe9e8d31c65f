// TrtllmKitRMSNorm: one RMSNorm (LLaMA's) as one kernel, a TensorRT IPluginV2DynamicExt that builds against
// the TensorRT 8.6 and 10.x headers.
//
// Inputs (linear layout):
//   0 x  T  (..., H)        T = half or float (bf16 where TensorRT has it)
//   1 w  W  any shape of H elements (the scale; TensorRT 8.6 widens fp16 constants to float, so W may differ)
// Output:
//   0 y  T  (..., H)
// Field: eps (float32).
//
// As transformers' LlamaRMSNorm: r = rsqrt(mean(float(x)^2) + eps); y = T(float(T(float(x) * r)) * float(w)),
// i.e. the normalised row is rounded to T before the scale, as eager does. The statistics are float32, so no
// max-scaling is needed (the exported graph scales by the row's max so that an fp16 builder cannot overflow).
// Why: the exported RMSNorm is ~15 small ops; on TensorRT 8.6 at optimization level 0 (the plugin layout) they
// run as about 8 kernels per norm, 2 norms per block (H200, llama-7b: most of the step outside the GEMMs).
// One block per row; no allocation, no synchronisation: capturable in a CUDA graph.

#pragma nv_diag_suppress 1444
#pragma nv_diag_suppress 1215
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 997

#include "plugin_common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace
{

constexpr char const* kNormName = "TrtllmKitRMSNorm";
constexpr char const* kNormVersion = "1";
constexpr int kThreads = 256;

template <typename T, typename W>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(
    T const* __restrict__ x, W const* __restrict__ w, T* __restrict__ y, int H, float eps)
{
    __shared__ float partial[kThreads / 32];
    __shared__ float inv;
    int64_t const row = blockIdx.x;
    T const* xr = x + row * H;
    T* yr = y + row * H;
    float sum = 0.f;
    for (int i = threadIdx.x; i < H; i += kThreads)
    {
        float const v = trtllm_kit::to_f32(xr[i]);
        sum += v * v;
    }
    for (int off = 16; off > 0; off /= 2)
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if ((threadIdx.x & 31) == 0)
        partial[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x < 32)
    {
        float s = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.f;
        for (int off = 16; off > 0; off /= 2)
            s += __shfl_xor_sync(0xffffffffu, s, off);
        if (threadIdx.x == 0)
            inv = rsqrtf(s / float(H) + eps);
    }
    __syncthreads();
    float const r = inv;
    for (int i = threadIdx.x; i < H; i += kThreads)
    {
        float const normed = trtllm_kit::to_f32(trtllm_kit::from_f32<T>(trtllm_kit::to_f32(xr[i]) * r)); // rounded to T first, as eager
        yr[i] = trtllm_kit::from_f32<T>(normed * trtllm_kit::to_f32(w[i]));
    }
}

template <typename T>
cudaError_t launch_norm(nvinfer1::DataType wType, void const* x, void const* w, void* y, int64_t rows, int H,
    float eps, cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(rows)), block(kThreads);
    switch (wType)
    {
    case nvinfer1::DataType::kFLOAT:
        rms_norm_kernel<T, float><<<grid, block, 0, stream>>>(
            static_cast<T const*>(x), static_cast<float const*>(w), static_cast<T*>(y), H, eps);
        break;
    case nvinfer1::DataType::kHALF:
        rms_norm_kernel<T, __half><<<grid, block, 0, stream>>>(
            static_cast<T const*>(x), static_cast<__half const*>(w), static_cast<T*>(y), H, eps);
        break;
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16:
        rms_norm_kernel<T, __nv_bfloat16><<<grid, block, 0, stream>>>(
            static_cast<T const*>(x), static_cast<__nv_bfloat16 const*>(w), static_cast<T*>(y), H, eps);
        break;
#endif
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

class RMSNormPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit RMSNormPlugin(float eps)
        : mEps(eps)
    {
    }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kNormName; }
    char const* getPluginVersion() const noexcept override { return kNormVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    size_t getSerializationSize() const noexcept override { return sizeof(float); }
    void serialize(void* buffer) const noexcept override { std::memcpy(buffer, &mEps, sizeof(float)); }
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
        auto* p = new (std::nothrow) RMSNormPlugin(mEps);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t /*outputIndex*/, nvinfer1::DimsExprs const* inputs,
        int32_t /*nbInputs*/, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        return inputs[0];
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos > 2)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (pos == 1)
            return trtllm_kit::float_type(d.type); // the scale in whatever float type it comes
        return pos == 0 ? trtllm_kit::float_type(d.type) : d.type == inOut[0].type;
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        mConfigError.clear();
        if (nbInputs != 2 || nbOutputs != 1)
            mConfigError = "expected 2 inputs and 1 output";
        else if (in[0].desc.dims.nbDims < 1)
            mConfigError = "x must have rank >= 1";
        else
        {
            int64_t const H = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
            int64_t n = 1;
            for (int32_t i = 0; i < in[1].desc.dims.nbDims; ++i)
                n *= in[1].desc.dims.d[i];
            if (H >= 0 && n >= 0 && n != H)
                mConfigError = "the scale has " + std::to_string(n) + " elements, x's rows " + std::to_string(H);
        }
        if (!mConfigError.empty())
            trtllm_kit::plugin_error(kNormName, "%s", mConfigError.c_str());
    }

    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override
    {
        if (!mConfigError.empty())
        {
            trtllm_kit::plugin_error(kNormName, "%s", mConfigError.c_str());
            return 1;
        }
        nvinfer1::Dims const& xd = inputDesc[0].dims;
        int const H = xd.d[xd.nbDims - 1];
        int64_t rows = 1;
        for (int32_t i = 0; i + 1 < xd.nbDims; ++i)
            rows *= xd.d[i];
        if (rows == 0 || H == 0)
            return 0;
        if (rows > 0x7fffffff)
        {
            trtllm_kit::plugin_error(kNormName, "%lld rows exceed the grid", (long long) rows);
            return 1;
        }
        cudaError_t e = cudaErrorInvalidValue;
        switch (inputDesc[0].type)
        {
        case nvinfer1::DataType::kHALF:
            e = launch_norm<__half>(inputDesc[1].type, inputs[0], inputs[1], outputs[0], rows, H, mEps, stream);
            break;
        case nvinfer1::DataType::kFLOAT:
            e = launch_norm<float>(inputDesc[1].type, inputs[0], inputs[1], outputs[0], rows, H, mEps, stream);
            break;
#if TRTLLM_KIT_HAS_BF16
        case nvinfer1::DataType::kBF16:
            e = launch_norm<__nv_bfloat16>(inputDesc[1].type, inputs[0], inputs[1], outputs[0], rows, H, mEps, stream);
            break;
#endif
        default: break;
        }
        if (e != cudaSuccess)
        {
            trtllm_kit::plugin_error(kNormName, "kernel launch failed (rows=%lld H=%d): %s", (long long) rows, H, cudaGetErrorString(e));
            return 1;
        }
        return 0;
    }

private:
    float mEps;
    std::string mNamespace;
    std::string mConfigError;
};

class RMSNormCreator final : public nvinfer1::IPluginCreator
{
public:
    RMSNormCreator()
    {
        mFields.emplace_back("eps", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
        mFieldCollection.nbFields = int32_t(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kNormName; }
    char const* getPluginVersion() const noexcept override { return kNormVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        float eps = -1.f;
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            if (f.name && std::strcmp(f.name, "eps") == 0 && f.type == nvinfer1::PluginFieldType::kFLOAT32
                && f.length >= 1 && f.data)
                eps = *static_cast<float const*>(f.data);
        }
        if (!(eps >= 0.f))
        {
            trtllm_kit::plugin_error(kNormName, "%s: field eps must be one float32 >= 0", name ? name : "");
            return nullptr;
        }
        return make(eps);
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        if (!data || length != sizeof(float))
        {
            trtllm_kit::plugin_error(kNormName, "%s: serialized plugin has %zu bytes, expected %zu", name ? name : "", length, sizeof(float));
            return nullptr;
        }
        float eps;
        std::memcpy(&eps, data, sizeof(float));
        return make(eps);
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    nvinfer1::IPluginV2* make(float eps) const noexcept
    {
        auto* p = new (std::nothrow) RMSNormPlugin(eps);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mNamespace;
};

} // namespace

REGISTER_TENSORRT_PLUGIN(RMSNormCreator);

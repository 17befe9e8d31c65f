// Helpers shared by the toolkit's TensorRT plugins (header only; every plugin keeps its own translation unit); the
// device-side ones are in kernel_common.cuh.
#pragma once

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include "kernel_common.cuh"
#include "rotary_kernel.cuh"

#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace trtllm_kit
{

// One error line on stderr, prefixed with the plugin's name: no logger is handed to IPluginV2 plugins, and
// stderr is where TensorRT's own messages go too.
inline void plugin_error(char const* plugin, char const* fmt, ...)
{
    std::va_list args;
    va_start(args, fmt);
    std::fprintf(stderr, "[%s] error: ", plugin);
    std::vfprintf(stderr, fmt, args);
    std::fprintf(stderr, "\n");
    va_end(args);
}

// The float types a plugin computes in: half and float, bf16 where TensorRT has it.
inline bool float_type(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kHALF || t == nvinfer1::DataType::kFLOAT
#if TRTLLM_KIT_HAS_BF16
        || t == nvinfer1::DataType::kBF16
#endif
        ;
}

// Elements of a tensor at the dims TensorRT gives (0 when an axis is unknown, < 0).
inline int64_t volume(nvinfer1::Dims const& d)
{
    int64_t n = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
        n *= d.d[i] > 0 ? int64_t(d.d[i]) : int64_t(0);
    return n;
}

template <typename T>
cudaError_t launch_rotary_tables(nvinfer1::DataType cType, void const* const* in, void* const* out, bool fused,
    int64_t rows, int S, int nh, int nkv, int hd, float scale, cudaStream_t stream)
{
    switch (cType)
    {
    case nvinfer1::DataType::kHALF: return launch_rotary<T, __half>(in, out, fused, rows, S, nh, nkv, hd, scale, stream);
    case nvinfer1::DataType::kFLOAT: return launch_rotary<T, float>(in, out, fused, rows, S, nh, nkv, hd, scale, stream);
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16:
        return launch_rotary<T, __nv_bfloat16>(in, out, fused, rows, S, nh, nkv, hd, scale, stream);
#endif
    default: return cudaErrorInvalidValue;
    }
}

// The rotary kernel (rotary_kernel.cuh) for q/k of type `type` and cos/sin tables of type `cType`, any float types
// TensorRT hands (the TrtllmKitRotary plugin, and the TrtllmKitGemm plugin's rotary epilogue on cuBLASLt).
inline cudaError_t launch_rotary_as(nvinfer1::DataType type, nvinfer1::DataType cType, void const* const* in,
    void* const* out, bool fused, int64_t rows, int S, int nh, int nkv, int hd, float scale, cudaStream_t stream)
{
    switch (type)
    {
    case nvinfer1::DataType::kHALF:
        return launch_rotary_tables<__half>(cType, in, out, fused, rows, S, nh, nkv, hd, scale, stream);
    case nvinfer1::DataType::kFLOAT:
        return launch_rotary_tables<float>(cType, in, out, fused, rows, S, nh, nkv, hd, scale, stream);
#if TRTLLM_KIT_HAS_BF16
    case nvinfer1::DataType::kBF16:
        return launch_rotary_tables<__nv_bfloat16>(cType, in, out, fused, rows, S, nh, nkv, hd, scale, stream);
#endif
    default: return cudaErrorInvalidValue;
    }
}

} // namespace trtllm_kit

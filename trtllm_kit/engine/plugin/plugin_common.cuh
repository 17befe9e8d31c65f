// Helpers shared by the toolkit's TensorRT plugins (header only; every plugin keeps its own translation unit).
#pragma once

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdarg>
#include <cstdio>

// bf16 tensors exist from TensorRT 9 on.
#if NV_TENSORRT_MAJOR >= 9
#define TRTLLM_KIT_HAS_BF16 1
#else
#define TRTLLM_KIT_HAS_BF16 0
#endif

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

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
#if TRTLLM_KIT_HAS_BF16
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
#endif

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
#if TRTLLM_KIT_HAS_BF16
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
#endif

// v rounded to T and back: what storing an intermediate result in T does (eager's per-op rounding).
template <typename T>
__device__ __forceinline__ float round_to(float v)
{
    return to_f32<T>(from_f32<T>(v));
}

} // namespace trtllm_kit

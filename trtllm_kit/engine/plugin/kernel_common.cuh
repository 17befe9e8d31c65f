// Device helpers and launch code shared by the toolkit's CUDA kernels (header only, no TensorRT dependency: the
// plugins include it through plugin_common.cuh, and scripts/h200/decode_step_probe.cu times the kernels without
// TensorRT).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

// bf16 tensors exist from TensorRT 9 on; without TensorRT (the probes) CUDA has them.
#ifndef TRTLLM_KIT_HAS_BF16
#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR >= 9
#define TRTLLM_KIT_HAS_BF16 1
#else
#define TRTLLM_KIT_HAS_BF16 0
#endif
#endif

namespace trtllm_kit
{

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

// Programmatic dependent launch (Hopper and later; no-ops elsewhere). A kernel launched with the programmatic
// stream serialization attribute may start while the kernel before it on the stream still runs, once every block of
// that one has called allow_dependents(); it must wait_for_predecessor() before it reads what the predecessor wrote
// or writes anything (the wait returns when the predecessor has finished and its writes are visible).
__device__ __forceinline__ void allow_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_predecessor()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A hint to bring the 128-byte line holding p into L2 (no register is written; a no-op before sm_80).
__device__ __forceinline__ void prefetch_l2(void const* p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void) p;
#endif
}

// Multiprocessors of the current device (asked once per process).
inline int device_sms()
{
    static int const sms = [] {
        int device = 0, n = 0;
        return cudaGetDevice(&device) == cudaSuccess
                && cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) == cudaSuccess
            ? n
            : 0;
    }();
    return sms;
}

// Whether this process launches the toolkit's decode kernels with PDL: the first device asked about is Hopper or
// later (compute capability >= 9.0) and TRTLLM_KIT_PDL is not 0 (an A/B knob); decided once per process.
inline bool pdl_enabled()
{
    static bool const enabled = [] {
        char const* env = std::getenv("TRTLLM_KIT_PDL");
        if (env && std::strcmp(env, "0") == 0)
            return false;
        int device = 0, major = 0;
        return cudaGetDevice(&device) == cudaSuccess
            && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9;
    }();
    return enabled;
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization where pdl is true (the
// kernel must then call wait_for_predecessor() before it touches anything the kernel before it reads or writes).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
    Args&&... args)
{
#if CUDART_VERSION >= 11080
    if (pdl)
    {
        cudaLaunchConfig_t config{};
        config.gridDim = grid;
        config.blockDim = block;
        config.dynamicSmemBytes = smem;
        config.stream = stream;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        config.attrs = attr;
        config.numAttrs = 1;
        if (cudaLaunchKernelEx(&config, kernel, args...) == cudaSuccess)
            return cudaSuccess;
        (void) cudaGetLastError(); // refused (a driver or capture without PDL): launch it plainly
    }
#endif
    (void) pdl;
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return cudaGetLastError();
}

// v rounded to T and back: what storing an intermediate result in T does (eager's per-op rounding).
template <typename T>
__device__ __forceinline__ float round_to(float v)
{
    return to_f32<T>(from_f32<T>(v));
}

} // namespace trtllm_kit

// The rotary kernel of the TrtllmKitRotary plugin (rotary.cu): header only, no TensorRT dependency, so that
// scripts/h200/decode_step_probe.cu times the same kernel outside TensorRT.
#pragma once

#include "kernel_common.cuh"

#include <cstdint>

namespace trtllm_kit
{

constexpr int kRopeThreads = 128;

// One rotated element, rounded as eager's fp16 ops: x at d < hd/2 (first) is T(T(x cos) + T(-partner sin)), x at
// d >= hd/2 is T(T(x cos) + T(partner sin)); partner is the element hd/2 away, c and s the tables at x's index.
template <typename T>
__device__ __forceinline__ float rotate_one(float x, float partner, float c, float s, bool first)
{
    return round_to<T>(round_to<T>(x * c) + round_to<T>((first ? -partner : partner) * s));
}

// Where a block's q, k (and v) rows are read: a base pointer and the stride of one (batch, position) row each.
template <typename T>
struct RopeSources
{
    T const* q;
    T const* k;
    T const* v; // null unless fused_qkv
    int64_t sq, sk, sv;
};

template <typename T, typename C>
__global__ void __launch_bounds__(kRopeThreads) rotary_kernel(RopeSources<T> src, C const* __restrict__ cos,
    C const* __restrict__ sin, T* __restrict__ q_out, T* __restrict__ k_out, T* __restrict__ v_out, int S, int nh,
    int nkv, int hd, float scale)
{
    wait_for_predecessor(); // launched with PDL where it is on: the projections come from the kernel before
    allow_dependents();
    int64_t const row = blockIdx.x; // b * S + s
    int64_t const b = row / S;
    int64_t const s = row % S;
    int const half = hd / 2;
    C const* c = cos + row * hd;
    C const* sn = sin + row * hd;
    float const sc = round_to<T>(scale);
    // one element pair per thread; blockIdx.y spreads a row over blocks (a decode step at batch 1 is one row: a
    // single block ran 32 iterations per thread on one SM, 14 us per layer on an H200)
    int const i = blockIdx.y * kRopeThreads + threadIdx.x;
    int const heads = nh + nkv + (src.v ? nkv : 0);
    if (i < heads * half)
    {
        int const head = i / half;
        int const d = i - head * half;
        bool const is_q = head < nh;
        if (head >= nh + nkv) // v: split off, heads first, not rotated
        {
            int const h = head - nh - nkv;
            T const* x = src.v + row * src.sv + int64_t(h) * hd;
            T* y = v_out + ((b * nkv + h) * S + s) * hd;
            y[d] = x[d];
            y[d + half] = x[d + half];
            return;
        }
        int const h = is_q ? head : head - nh;
        int const n = is_q ? nh : nkv;
        T const* x = (is_q ? src.q + row * src.sq : src.k + row * src.sk) + int64_t(h) * hd;
        T* y = (is_q ? q_out : k_out) + ((b * n + h) * S + s) * hd;
        float const x1 = to_f32(x[d]);
        float const x2 = to_f32(x[d + half]);
        float y1 = rotate_one<T>(x1, x2, to_f32(c[d]), to_f32(sn[d]), true);
        float y2 = rotate_one<T>(x2, x1, to_f32(c[d + half]), to_f32(sn[d + half]), false);
        if (is_q)
        {
            y1 *= sc;
            y2 *= sc;
        }
        y[d] = from_f32<T>(y1);
        y[d + half] = from_f32<T>(y2);
    }
}

// Pairs of elements one kernel handles per (batch, position) row: q and k heads, and v's with fused_qkv.
inline int64_t row_pairs(int nh, int nkv, int hd, bool fused)
{
    return int64_t(nh + nkv + (fused ? nkv : 0)) * (hd / 2);
}

template <typename T, typename C>
cudaError_t launch_rotary(void const* const* in, void* const* out, bool fused, int64_t rows, int S, int nh, int nkv,
    int hd, float scale, cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(rows), static_cast<unsigned>((row_pairs(nh, nkv, hd, fused) + kRopeThreads - 1) / kRopeThreads));
    RopeSources<T> src{};
    int64_t const q_width = int64_t(nh) * hd, kv_width = int64_t(nkv) * hd;
    if (fused)
    {
        T const* qkv = static_cast<T const*>(in[0]);
        int64_t const stride = q_width + 2 * kv_width;
        src = RopeSources<T>{qkv, qkv + q_width, qkv + q_width + kv_width, stride, stride, stride};
    }
    else
        src = RopeSources<T>{static_cast<T const*>(in[0]), static_cast<T const*>(in[1]), nullptr, q_width, kv_width, 0};
    int const t = fused ? 1 : 2; // where the tables are
    return launch_kernel(pdl_enabled(), rotary_kernel<T, C>, grid, dim3(kRopeThreads), 0, stream, src,
        static_cast<C const*>(in[t]), static_cast<C const*>(in[t + 1]), static_cast<T*>(out[0]), static_cast<T*>(out[1]),
        fused ? static_cast<T*>(out[2]) : nullptr, S, nh, nkv, hd, scale);
}

} // namespace trtllm_kit

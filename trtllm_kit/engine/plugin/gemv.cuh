// The batch-1 decode GEMV of the TrtllmKitGemm plugin (gemm.cu), with its folded prologue (RMSNorm or SwiGLU) and
// epilogue (residual add, or the fused gate/up multiply's SwiGLU): header only, no TensorRT dependency, so that scripts/h200/decode_step_probe.cu times the
// same kernel outside TensorRT.
#pragma once

#include "kernel_common.cuh"
#include "rotary_kernel.cuh"

#include <cstdint>

namespace trtllm_kit
{

// One row only: at 2-4 rows it ran 0-70% slower than cuBLASLt per weight (H200, tests/test_gemm_gpu.py, eighth session).
constexpr int kGemvMaxRows = 1;
constexpr int kGemvThreads = 256; // 8 warps, one output each

enum Prologue : int32_t
{
    kNone = 0,
    kRmsNorm = 1,
    kSwiGlu = 2,
    kRmsNormFolded = 3, // RMSNorm with its scale already in w's columns: y = (w' . x) * rsqrt(mean(x^2) + eps)
};

enum Epilogue : int32_t
{
    kPlain = 0,
    kResidual = 1,   // + r
    kSwiGluPair = 2, // the fused gate/up multiply's SwiGLU: silu(gate) * up, half as many outputs as weight rows
    kRope = 3,       // the fused q/k/v multiply's rotary embedding: q (scaled) and k rotated, v as it is (GemvRope)
};

// Where the rotary epilogue (kRope) writes and what it reads: the fused q/k/v multiply's outputs split into q
// (nh, hd), k and v (nkv, hd) of one token (batch 1, one position), rotated as rotary_kernel.cuh does with the
// position's cos/sin rows (hd values each, float or half), q times `scale`.
struct GemvRope
{
    void* q = nullptr;
    void* k = nullptr;
    void* v = nullptr;
    void const* cos = nullptr;
    void const* sin = nullptr;
    bool table_float = false;
    int nh = 0, nkv = 0, hd = 0;
    float scale = 1.f;
};

// Whether the rotary epilogue takes these heads: a block holds 4 (d, d + hd / 2) pairs of one head.
inline bool gemv_rope_fits(int hd)
{
    return hd > 0 && hd % 8 == 0;
}

// What a multiply folds in: the op before it (Prologue), its scale and epsilon, and the op after it (Epilogue).
struct Folds
{
    int32_t prologue = kNone;
    float eps = 0.f;
    int32_t epilogue = kPlain;
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

// x vectors (16 bytes) each thread loads before it uses any. 1: batching 4 (their L2 round trips overlapped) took
// more registers and the step's multiplies 0.05-0.08 ms longer (H200, llama-7b, scripts/h200/decode_step_probe.cu).
constexpr int kStageBatch = 1;

// x' (1 x K, fp16) into shared memory as 16-byte vectors: x itself, its RMSNorm, or SwiGLU of [gate | up].
template <int PRO, typename G>
__device__ __forceinline__ void stage_x(uint4* xs, __half const* __restrict__ x, G const* __restrict__ g, int kv,
    float eps, float* partial)
{
    uint4 const* x4 = reinterpret_cast<uint4 const*>(x);
    int const step = int(blockDim.x) * kStageBatch;
    if (PRO == kSwiGlu)
    {
        for (int i0 = threadIdx.x; i0 < kv; i0 += step)
        {
            uint4 gv[kStageBatch], uv[kStageBatch];
#pragma unroll
            for (int b = 0; b < kStageBatch; ++b)
            {
                int const i = i0 + b * int(blockDim.x);
                if (i < kv)
                {
                    gv[b] = x4[i];
                    uv[b] = x4[kv + i];
                }
            }
#pragma unroll
            for (int b = 0; b < kStageBatch; ++b)
            {
                int const i = i0 + b * int(blockDim.x);
                if (i >= kv)
                    break;
                __half const* gh = reinterpret_cast<__half const*>(&gv[b]);
                __half const* uh = reinterpret_cast<__half const*>(&uv[b]);
                uint4 out;
                __half* oh = reinterpret_cast<__half*>(&out);
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    oh[j] = __float2half_rn(round_to<__half>(silu(__half2float(gh[j]))) * __half2float(uh[j]));
                xs[i] = out;
            }
        }
    }
    else
    {
        float sum = 0.f;
        for (int i0 = threadIdx.x; i0 < kv; i0 += step)
        {
            uint4 v[kStageBatch];
#pragma unroll
            for (int b = 0; b < kStageBatch; ++b)
            {
                int const i = i0 + b * int(blockDim.x);
                if (i < kv)
                    v[b] = x4[i];
            }
#pragma unroll
            for (int b = 0; b < kStageBatch; ++b)
            {
                int const i = i0 + b * int(blockDim.x);
                if (i >= kv)
                    break;
                xs[i] = v[b];
                if (PRO == kRmsNorm)
                {
                    __half const* hv = reinterpret_cast<__half const*>(&v[b]);
#pragma unroll
                    for (int j = 0; j < 8; ++j)
                    {
                        float const f = __half2float(hv[j]);
                        sum += f * f;
                    }
                }
            }
        }
        if (PRO == kRmsNorm)
        {
            float const r = rsqrtf(block_sum(sum, partial) / float(kv * 8) + eps);
            for (int i = threadIdx.x; i < kv; i += blockDim.x) // each thread rewrites the vectors it staged
            {
                uint4 v = xs[i];
                __half* hv = reinterpret_cast<__half*>(&v);
#pragma unroll
                for (int j = 0; j < 8; ++j) // rounded to fp16 before the scale, as eager (rms_norm.cu)
                    hv[j] = __float2half_rn(round_to<__half>(__half2float(hv[j]) * r) * to_f32(g[i * 8 + j]));
                xs[i] = v;
            }
        }
    }
    __syncthreads();
}

// y (1 x N) = x' (1 x K) . w^T, w (N x K) row-major, fp16 in and out, float accumulation, then the epilogue: none,
// + r (kResidual), or SwiGLU (kSwiGluPair: w is (2N x K), [gate | up] stacked as the fused gate/up weight, and
// y[n] = T(T(silu(T(gate[n]))) * T(up[n])), as eager rounds them). One warp per output n: its lanes stream w's row n
// (and row N + n) in 16-byte vectors (evict-first: read once per step), U in flight per lane per row, the first U
// issued before the kernel waits for its predecessor (they do not depend on it); a warp-shuffle sum. x' is staged in
// shared memory where the prologue changes it (RMSNorm with its scale, SwiGLU); else (DX) each warp reads the x
// vectors it needs from global memory (the block's other warps hit L1): no block barrier between the wait and the
// first multiply-adds, 0.01-0.10 ms off llama-7b's batch-1 step over four H200 calls, bit-identical. (A grid of one
// wave, each warp taking several outputs so that x' is staged once per block, ran the step's multiplies 6% slower on
// an H200: fewer loads in flight. An L2 prefetch of the rest of each row before the wait made the step 0.1 ms slower
// for the o multiply alone, 0.85 ms for all; scripts/h200/decode_step_probe.cu.)
template <int PRO, int EPI, int U, typename G, bool DX = false>
__global__ void __launch_bounds__(kGemvThreads) gemv_out_x_in(__half const* __restrict__ w,
    __half const* __restrict__ x, G const* __restrict__ g, __half const* __restrict__ r, __half* __restrict__ y, int K,
    int N, float eps, GemvRope rope)
{
    constexpr int R = EPI == kSwiGluPair ? 2 : 1; // weight rows per output
    extern __shared__ uint4 xs[];
    __shared__ float partial[kGemvThreads / 32];
    int const kv = K / 8; // 16-byte vectors per row
    int const lane = threadIdx.x & 31;
    int const warp = threadIdx.x >> 5;
    // kRope: warps w and w + 4 take rows d and d + hd / 2 of one head (the pairs the rotation mixes), 4 pairs a block
    int const half = rope.hd / 2;
    int const pair = blockIdx.x * 4 + (warp & 3);
    int const n = EPI == kRope ? (pair / half) * rope.hd + pair % half + (warp >> 2) * half
                               : (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    bool const active = n < N; // every warp stages x' (and syncs) before the idle ones leave
    uint4 const* rows[R];
#pragma unroll
    for (int q = 0; q < R; ++q)
        rows[q] = reinterpret_cast<uint4 const*>(w) + (size_t(active ? n : 0) + size_t(q) * N) * kv;
    allow_dependents(); // the next multiply may start streaming its weights (launched with PDL)
    uint4 wv[R][U];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
        for (int q = 0; q < R; ++q)
            wv[q][u] = active && lane + u * 32 < kv ? __ldcs(rows[q] + lane + u * 32) : make_uint4(0, 0, 0, 0);
    wait_for_predecessor(); // x, g and r may come from the kernel before; y may be read by it
    // the residual, loaded now so that its latency is not added at the end
    float const res = EPI == kResidual && active && lane == 0 ? __half2float(r[n]) : 0.f;
    static_assert(!DX || PRO == kNone || PRO == kRmsNormFolded, "x read directly only where it is used as it is");
    if (!DX)
        stage_x<PRO, G>(xs, x, g, kv, eps, partial);
    if (!active)
        return;
    uint4 const* x4 = reinterpret_cast<uint4 const*>(x);
    float acc[R];
    float ss = 0.f; // kRmsNormFolded: sum of x^2 over the row, from the x' this warp reads anyway
#pragma unroll
    for (int q = 0; q < R; ++q)
        acc[q] = 0.f;
    for (int base = lane; base < kv; base += 32 * U)
    {
        uint4 xb[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
            xb[u] = base + u * 32 < kv ? (DX ? x4[base + u * 32] : xs[base + u * 32]) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < U; ++u)
        {
            int const i = base + u * 32;
            if (i < kv)
            {
                uint4 const xv = xb[u];
                __half2 const* xh = reinterpret_cast<__half2 const*>(&xv);
                if (PRO == kRmsNormFolded)
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                    {
                        float2 const b = __half22float2(xh[j]);
                        ss += b.x * b.x + b.y * b.y;
                    }
#pragma unroll
                for (int q = 0; q < R; ++q)
                {
                    __half2 const* wh = reinterpret_cast<__half2 const*>(&wv[q][u]);
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                    {
                        float2 const a = __half22float2(wh[j]), b = __half22float2(xh[j]);
                        acc[q] += a.x * b.x + a.y * b.y;
                    }
                }
            }
        }
        int const next = base + 32 * U;
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int q = 0; q < R; ++q)
                wv[q][u] = next + u * 32 < kv ? __ldcs(rows[q] + next + u * 32) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int q = 0; q < R; ++q)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            acc[q] += __shfl_xor_sync(0xffffffffu, acc[q], o);
    if (PRO == kRmsNormFolded)
    {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        float const r = rsqrtf(ss / float(K) + eps);
#pragma unroll
        for (int q = 0; q < R; ++q)
            acc[q] *= r;
    }
    if (EPI == kRope)
    {
        __shared__ float ry[kGemvThreads / 32];
        if (lane == 0)
            ry[warp] = round_to<__half>(acc[0]); // the multiply's fp16 output, as the rotary kernel reads it
        __syncthreads();
        if (warp >= 4 || lane >= 2)
            return;
        int const h = pair / half, d = pair % half + lane * half; // lane 0: row d, lane 1: row d + hd / 2
        float const x1 = ry[warp + 4 * lane], x2 = ry[warp + 4 * (1 - lane)];
        if (h >= rope.nh + rope.nkv) // v: not rotated
        {
            static_cast<__half*>(rope.v)[(h - rope.nh - rope.nkv) * rope.hd + d] = __float2half_rn(x1);
            return;
        }
        auto table = [&](void const* t) {
            return rope.table_float ? static_cast<float const*>(t)[d] : __half2float(static_cast<__half const*>(t)[d]);
        };
        float const c = table(rope.cos), sn = table(rope.sin);
        float y = rotate_one<__half>(x1, x2, c, sn, lane == 0); // as rotary_kernel: x1 this lane's row
        bool const is_q = h < rope.nh;
        if (is_q)
            y *= round_to<__half>(rope.scale);
        __half* out = is_q ? static_cast<__half*>(rope.q) + h * rope.hd : static_cast<__half*>(rope.k) + (h - rope.nh) * rope.hd;
        out[d] = __float2half_rn(y);
        return;
    }
    if (lane != 0)
        return;
    if (EPI == kSwiGluPair)
        y[n] = __float2half_rn(round_to<__half>(silu(round_to<__half>(acc[0]))) * round_to<__half>(acc[R - 1]));
    else if (EPI == kResidual)
        y[n] = __float2half_rn(round_to<__half>(acc[0]) + res);
    else
        y[n] = __float2half_rn(acc[0]);
}

// pdl: launched with programmatic stream serialization (PDL), so that its blocks start, and issue their first
// weight loads, while the kernel before it finishes (that kernel's allow_dependents()); the kernel waits for it before
// touching x, g, r or y. N: outputs (half the weight's rows with kSwiGluPair).
template <int PRO, int EPI, int U, typename G, bool DX = false>
cudaError_t launch_gemv(bool pdl, void const* w, void const* x, void const* g, void const* r, void* y,
    int K, int N, float eps, GemvRope const& rope, cudaStream_t stream)
{
    size_t const smem = DX ? 0 : size_t(K) * sizeof(__half); // x' staged: within the 48 KB every kernel may take (gemv_fits)
    int const warps = kGemvThreads / 32;
    return launch_kernel(pdl, gemv_out_x_in<PRO, EPI, U, G, DX>, dim3((N + warps - 1) / warps), dim3(kGemvThreads), smem,
        stream, static_cast<__half const*>(w), static_cast<__half const*>(x), static_cast<G const*>(g),
        static_cast<__half const*>(r), static_cast<__half*>(y), K, N, eps, rope);
}

// How the decode GEMV is launched: the loads of w in flight per lane, and with PDL or not.
struct GemvLaunch
{
    int unroll = 4;
    bool pdl = false;
    bool direct_x = true; // x read from global memory where the prologue leaves it as it is (else staged)
    GemvRope rope;        // the rotary epilogue's outputs and tables (kRope)
};

template <int PRO, int EPI, int U, typename G>
cudaError_t gemv_x(GemvLaunch const& l, void const* w, void const* x, void const* g, void const* r, void* y, int K,
    int N, float eps, cudaStream_t stream)
{
    constexpr bool can_dx = PRO == kNone || PRO == kRmsNormFolded;
    if (can_dx && l.direct_x)
        return launch_gemv<PRO, EPI, U, G, can_dx>(l.pdl, w, x, g, r, y, K, N, eps, l.rope, stream);
    return launch_gemv<PRO, EPI, U, G>(l.pdl, w, x, g, r, y, K, N, eps, l.rope, stream);
}

template <int PRO, int EPI, typename G>
cudaError_t gemv_unrolled(GemvLaunch const& l, void const* w, void const* x, void const* g, void const* r, void* y,
    int K, int N, float eps, cudaStream_t stream)
{
    switch (l.unroll)
    {
    case 8: return gemv_x<PRO, EPI, 8, G>(l, w, x, g, r, y, K, N, eps, stream);
    case 16: return gemv_x<PRO, EPI, 16, G>(l, w, x, g, r, y, K, N, eps, stream);
    default: return gemv_x<PRO, EPI, 4, G>(l, w, x, g, r, y, K, N, eps, stream);
    }
}

template <int PRO, typename G>
cudaError_t gemv_epilogue(Folds const& f, GemvLaunch const& l, void const* w, void const* x, void const* g,
    void const* r, void* y, int K, int N, cudaStream_t stream)
{
    switch (f.epilogue)
    {
    case kResidual: return gemv_unrolled<PRO, kResidual, G>(l, w, x, g, r, y, K, N, f.eps, stream);
    case kSwiGluPair: return gemv_unrolled<PRO, kSwiGluPair, G>(l, w, x, g, r, y, K, N, f.eps, stream);
    case kRope: return gemv_unrolled<PRO, kRope, G>(l, w, x, g, r, y, K, N, f.eps, stream);
    default: return gemv_unrolled<PRO, kPlain, G>(l, w, x, g, r, y, K, N, f.eps, stream);
    }
}

// The decode GEMV for one row with the folds f: the kernel for f's prologue and epilogue; scale_float says the
// RMSNorm scale (prologue 1) is float, else half (TensorRT 8.6 widens fp16 constants to float).
inline cudaError_t gemv_folded(Folds const& f, GemvLaunch const& launch, bool scale_float, void const* w, void const* x,
    void const* g, void const* r, void* y, int K, int N, cudaStream_t stream)
{
    static_assert(kGemvMaxRows == 1, "the GEMV kernel computes one row");
    switch (f.prologue)
    {
    case kRmsNorm:
        return scale_float ? gemv_epilogue<kRmsNorm, float>(f, launch, w, x, g, r, y, K, N, stream)
                           : gemv_epilogue<kRmsNorm, __half>(f, launch, w, x, g, r, y, K, N, stream);
    case kSwiGlu: return gemv_epilogue<kSwiGlu, __half>(f, launch, w, x, g, r, y, K, N, stream);
    case kRmsNormFolded: return gemv_epilogue<kRmsNormFolded, __half>(f, launch, w, x, g, r, y, K, N, stream);
    default: return gemv_epilogue<kNone, __half>(f, launch, w, x, g, r, y, K, N, stream);
    }
}

// Whether the GEMV takes this multiply: x' (M x K halves) and the kernel's own reduction buffer must fit the 48 KB of
// shared memory a kernel gets without opting in (K <= 24560 at one row; larger K, e.g. a 70B model's 28672-wide down
// projection, runs cuBLASLt).
inline bool gemv_fits(int64_t M, int64_t K)
{
    size_t const own = sizeof(float) * (kGemvThreads / 32); // gemv_out_x_in's static `partial`
    return M >= 1 && M <= kGemvMaxRows && K % 8 == 0
        && size_t(M) * size_t(K) * sizeof(__half) + own <= size_t(48) * 1024;
}

} // namespace trtllm_kit

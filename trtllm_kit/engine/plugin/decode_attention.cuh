// Decode attention of the TrtllmKitKVCacheAttention plugin (kv_cache_attention.cu): one new token per row, its K/V row
// appended to the in-place cache, attention over the valid prefix. Header only, no TensorRT dependency, so that
// scripts/h200/decode_step_probe.cu times the same kernel outside TensorRT.
#pragma once

#include "kernel_common.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace trtllm_kit
{

constexpr int kMaxHeadDim = 256;

// ------------------------------------------------------------------------------------------------
// Device helpers
// ------------------------------------------------------------------------------------------------

// Two consecutive elements (hd is even, so an even element offset is aligned for this load).
template <typename T>
__device__ __forceinline__ float2 load2(T const* p);
template <>
__device__ __forceinline__ float2 load2<float>(float const* p) { return *reinterpret_cast<float2 const*>(p); }
template <>
__device__ __forceinline__ float2 load2<__half>(__half const* p)
{
    return __half22float2(*reinterpret_cast<__half2 const*>(p));
}
#if TRTLLM_KIT_HAS_BF16
template <>
__device__ __forceinline__ float2 load2<__nv_bfloat16>(__nv_bfloat16 const* p)
{
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 const*>(p));
}
#endif

// A chunk of a K/V row as one memory transaction per lane: 16 bytes on the fast path, else one
// element pair (4 or 8 bytes), which every even head dim allows.
template <int BYTES>
struct Chunk;
template <>
struct Chunk<16> { using type = uint4; };
template <>
struct Chunk<8> { using type = uint2; };
template <>
struct Chunk<4> { using type = uint32_t; };

template <typename T, int BYTES>
__device__ __forceinline__ void chunk_to_float(typename Chunk<BYTES>::type const& c, float (&f)[BYTES / sizeof(T)])
{
    T const* e = reinterpret_cast<T const*>(&c);
#pragma unroll
    for (int i = 0; i < int(BYTES / sizeof(T)); ++i)
        f[i] = to_f32<T>(e[i]);
}

template <int BYTES>
__device__ __forceinline__ typename Chunk<BYTES>::type zero_chunk()
{
    return typename Chunk<BYTES>::type{};
}

__device__ __forceinline__ float warp_max(float x)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

__device__ __forceinline__ float warp_sum(float x)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

struct AttnParams
{
    void const* q;           // (B, nh, S, hd)
    void const* k;           // (B, nkv, S, hd)
    void const* v;           // (B, nkv, S, hd)
    void* k_cache;           // (B, nkv, M, hd) the OUTPUT cache: read after this step's rows are written
    void* v_cache;           // (B, nkv, M, hd)
    int32_t const* write_idx; // (B,)
    int32_t const* mask;     // (B, M)
    void* out;               // (B, nh, S, hd)
    int B, nh, nkv, S, M, hd;
    int group;               // nh / nkv query heads per kv head
    int prefetch = -1;       // cache rows per block brought into L2 before the kernel waits: -1 auto, 0 none
};

constexpr int kMaxDecodeSplits = 16;
constexpr int kPrefetchRows = 256; // cache rows per block brought into L2 early (AttnParams::prefetch)
// A split block's keys at the least: below ~128 keys the merge costs more than the split saves (H200, llama-7b at batch
// 1: 77 keys in 2 blocks 3.646 ms a step, in 1 block 3.609; 525 keys in 5 blocks 4.10, in 1 block 4.50;
// scripts/h200/decode_step_probe.cu, tenth session).
constexpr int kMinKeysPerSplit = 128;

// The keys split block blockIdx.z of a (b, kv head, pass) takes, [lo, hi), for write position w: keys [0, n) precede
// or are the query position (w clamped: any int32 is harmless, e.g. the uninitialised inputs TensorRT times plugins
// with), in `active` equal parts of at least kMinKeysPerSplit keys each (a short prefix runs in one block, unsplit: the
// merge costs more than it saves there). False for a split block with no keys (it leaves at once).
__device__ __forceinline__ bool split_keys(int w, int M, int splits, int& active, int& lo, int& hi)
{
    int const n = min(max(w, -1), M - 1) + 1;
    active = max(1, min(splits, n / kMinKeysPerSplit));
    if (int(blockIdx.z) >= active)
        return false;
    int const per = (n + active - 1) / active;
    lo = min(n, int(blockIdx.z) * per);
    hi = min(n, lo + per);
    return true;
}

// The cache rows a decode block will read (its part of the valid prefix, at most p.prefetch of them), K and V, brought
// into L2 while the kernel before still runs (launched with PDL): their DRAM latency then overlaps that kernel instead
// of adding to the step. write_idx is read past L1 and only to place these hints (the kernel reads it again after its
// wait): the predecessor may be the kernel that writes it.
template <typename T>
__device__ __forceinline__ void prefetch_cache_rows(AttnParams const& p, int splits)
{
    int const b = blockIdx.x / p.nkv;
    int active, lo, hi;
    if (!split_keys(__ldcg(p.write_idx + b), p.M, splits, active, lo, hi))
        return;
    hi = min(hi, lo + p.prefetch);
    size_t const row_bytes = size_t(p.hd) * sizeof(T);
    int const lines = int((row_bytes + 127) / 128);
    int const total = (hi - lo) * lines;
    size_t const bh = size_t(b) * p.nkv + blockIdx.x % p.nkv;
    char const* kc = static_cast<char const*>(p.k_cache) + (bh * p.M + lo) * row_bytes;
    char const* vc = static_cast<char const*>(p.v_cache) + (bh * p.M + lo) * row_bytes;
    for (int i = threadIdx.x; i < 2 * total; i += blockDim.x)
    {
        int const j = i < total ? i : i - total;
        prefetch_l2((i < total ? kc : vc) + size_t(j / lines) * row_bytes + size_t(j % lines) * 128);
    }
}

// Split-KV decode: each (b, kv head, pass) runs `splits` blocks over equal parts of the keys; `partial` holds
// (B * nkv * passes) x splits x GT x (hd + 2) floats, `tickets` one zero per (b, kv head, pass) (each merging block
// leaves its ticket at zero again). splits 1: one block per (b, kv head, pass), no buffers.
struct DecodeSplit
{
    int splits = 1;
    float* partial = nullptr;
    unsigned* tickets = nullptr;
};

// ------------------------------------------------------------------------------------------------
// Decode (S == 1)
// ------------------------------------------------------------------------------------------------

constexpr int kDecodeThreads = 256;
constexpr int kDecodeWarps = kDecodeThreads / 32;

// Grid (B * nkv, ceil(group / GT)); block kDecodeThreads. Block (b, kvh, pass) handles query heads
// g0 .. g0 + GT of kv head kvh. Groups of `lpr` lanes (a power of two) hold one K/V row, CPL chunks of
// VEC bytes per lane; a warp covers 32 / lpr rows at a time and warps stride over key positions, each warp with its
// own online softmax (scores, max and denominator in registers; shared memory does not grow with M), merged across
// warps once at the end. (Scores in shared memory with block-wide softmax statistics, then V in a second pass: two
// memory round trips and four barriers per 64 keys; with the cache prefetch as well, llama-7b's batch-1 step at 76
// cached tokens took 3.476 ms against 3.542 that way on an H200, scripts/h200/decode_step_probe.cu, eleventh session.)
// Minimum blocks per SM: as many as the registers allow (8 heads of accumulators need ~230 registers; at 4 heads per
// pass the fp16 kernel spills 12 bytes at 2 blocks; not measured against 1 block).
template <typename T, int VEC, int CPL, int GT>
__global__ void __launch_bounds__(kDecodeThreads, GT == 1 && CPL == 1 ? 3 : GT == 8 ? 1 : 2)
    decode_attention_kernel(AttnParams p, int lpr, DecodeSplit split, bool wide)
{
    if (p.prefetch > 0)
        prefetch_cache_rows<T>(p, split.splits);
    wait_for_predecessor(); // launched with PDL where it is on: q/k/v come from the kernel before
    allow_dependents();     // the next multiply may start streaming its weights meanwhile
    using V = typename Chunk<VEC>::type;
    constexpr int E = VEC / sizeof(T); // elements per chunk
    // K/V rows in flight per lane group (memory parallelism), fewer where 4 or 8 heads' state fills registers.
    // (8 at one head per pass took llama-7b's batch-1 step 0.00-0.04 ms longer on an H200: decode_step_probe.cu)
#ifdef TRTLLM_KIT_DECODE_UNROLL // probe builds only
    constexpr int kUnroll = TRTLLM_KIT_DECODE_UNROLL;
#else
    constexpr int kUnroll = GT >= 4 ? 2 : 4;
#endif

    int const b = blockIdx.x / p.nkv;
    int const kvh = blockIdx.x % p.nkv;
    int const g0 = blockIdx.y * GT;
    int const ng = min(GT, p.group - g0); // heads of this pass that exist
    int const warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int const rpw = 32 / lpr;           // rows per warp per step
    int const rg = lane / lpr, sub = lane % lpr;
    int const chunks = p.hd / E;        // chunks per row

    extern __shared__ float smem[];
    float* s_out = smem;                           // (GT, hd) output accumulated across warps, unnormalised
    float* s_red = s_out + GT * p.hd;              // (2, kDecodeWarps, GT) each warp's max, then denominator
    float* s_part = s_red + 2 * kDecodeWarps * GT; // wide: (kDecodeWarps, GT, hd) each warp's sums

    size_t const bh = size_t(b) * p.nkv + kvh;
    T* kc = static_cast<T*>(p.k_cache) + bh * p.M * p.hd; // (M, hd)
    T* vc = static_cast<T*>(p.v_cache) + bh * p.M * p.hd; // (M, hd)
    int32_t const* mrow = p.mask + size_t(b) * p.M;        // (M,)
    int const w = p.write_idx[b];

    int active, lo, hi; // this block's keys [lo, hi) of the valid prefix (split_keys)
    if (!split_keys(w, p.M, split.splits, active, lo, hi))
        return;

    // This lane's chunks of the GT query rows, kept packed (converted on the fly) to save registers.
    V qv[GT][CPL];
#pragma unroll
    for (int g = 0; g < GT; ++g)
    {
        T const* qrow = static_cast<T const*>(p.q) + (size_t(b) * p.nh + kvh * p.group + g0 + g) * p.hd;
#pragma unroll
        for (int c = 0; c < CPL; ++c)
        {
            int const ci = sub + c * lpr;
            qv[g][c] = (g < ng && ci < chunks) ? reinterpret_cast<V const*>(qrow)[ci] : zero_chunk<VEC>();
        }
    }

    // 1. Append this step's row (position w = n - 1), by the blocks whose keys hold it (every head pass writes the
    // same bytes). The blocks read that row from k and v themselves, not back from the cache: no wait for the write.
    T const* knew = static_cast<T const*>(p.k) + bh * p.hd;
    T const* vnew = static_cast<T const*>(p.v) + bh * p.hd;
    if (w >= lo && w < hi)
    {
        V* kd = reinterpret_cast<V*>(kc + size_t(w) * p.hd);
        V* vd = reinterpret_cast<V*>(vc + size_t(w) * p.hd);
        for (int c = threadIdx.x; c < chunks; c += kDecodeThreads)
        {
            kd[c] = reinterpret_cast<V const*>(knew)[c];
            vd[c] = reinterpret_cast<V const*>(vnew)[c];
        }
    }

    // 2. Each warp runs its own online softmax over its rows: the K and V rows of a step are loaded together (one
    // memory round trip), scores stay in registers (a lane group's dot product, reduced over its lpr lanes), the
    // warp's running max and denominator come from shuffles, and V is accumulated with the probabilities at once:
    // no shared memory and no barrier until the warps are merged. The loop bound is uniform per warp so that
    // every lane reaches every shuffle.
    float acc[GT][CPL][E];
    float m_w[GT], l_w[GT]; // this warp's running max and denominator (the same in every lane)
#pragma unroll
    for (int g = 0; g < GT; ++g)
    {
        m_w[g] = -INFINITY;
        l_w[g] = 0.f;
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
            for (int e = 0; e < E; ++e)
                acc[g][c][e] = 0.f;
    }
    int const rows_per_step = kDecodeWarps * rpw * kUnroll;
    for (int base = lo + warp * rpw * kUnroll; base < hi; base += rows_per_step)
    {
        V kv[kUnroll][CPL], vv[kUnroll][CPL];
        bool ok[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            int const t = base + u * rpw + rg;
            // loaded whatever the mask says (a masked row is skipped below), so that the loads do not wait for it
            ok[u] = t < hi && mrow[t] != 0;
            T const* krow = t == w ? knew : kc + size_t(t) * p.hd;
            T const* vrow = t == w ? vnew : vc + size_t(t) * p.hd;
#pragma unroll
            for (int c = 0; c < CPL; ++c)
            {
                int const ci = sub + c * lpr;
                bool const in = t < hi && ci < chunks;
                kv[u][c] = in ? reinterpret_cast<V const*>(krow)[ci] : zero_chunk<VEC>();
                vv[u][c] = in ? reinterpret_cast<V const*>(vrow)[ci] : zero_chunk<VEC>();
            }
        }
        float sc[kUnroll][GT];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
#pragma unroll
            for (int g = 0; g < GT; ++g)
                sc[u][g] = 0.f;
#pragma unroll
            for (int c = 0; c < CPL; ++c)
            {
                float kf[E];
                chunk_to_float<T, VEC>(kv[u][c], kf);
#pragma unroll
                for (int g = 0; g < GT; ++g)
                {
                    float qf[E];
                    chunk_to_float<T, VEC>(qv[g][c], qf);
#pragma unroll
                    for (int e = 0; e < E; ++e)
                        sc[u][g] = fmaf(qf[e], kf[e], sc[u][g]);
                }
            }
#pragma unroll
            for (int g = 0; g < GT; ++g)
            {
                for (int off = lpr >> 1; off > 0; off >>= 1)
                    sc[u][g] += __shfl_xor_sync(0xffffffffu, sc[u][g], off);
                if (!ok[u])
                    sc[u][g] = -INFINITY;
            }
        }
#pragma unroll
        for (int g = 0; g < GT; ++g)
        {
            float mx = sc[0][g];
#pragma unroll
            for (int u = 1; u < kUnroll; ++u)
                mx = fmaxf(mx, sc[u][g]);
            for (int off = lpr; off < 32; off <<= 1) // over the warp's row groups
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            float const m_new = fmaxf(m_w[g], mx);
            // all keys so far masked: keep alpha finite (the accumulators are still zero)
            float const alpha = m_new == -INFINITY ? 1.f : __expf(m_w[g] - m_new);
            m_w[g] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int u = 0; u < kUnroll; ++u)
            {
                sc[u][g] = ok[u] ? __expf(sc[u][g] - m_new) : 0.f;
                sum += sc[u][g];
            }
            for (int off = lpr; off < 32; off <<= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, off);
            l_w[g] = l_w[g] * alpha + sum;
#pragma unroll
            for (int c = 0; c < CPL; ++c)
#pragma unroll
                for (int e = 0; e < E; ++e)
                    acc[g][c][e] *= alpha;
        }
        // masked rows are skipped: their slots may hold garbage, and 0 * NaN would poison the sum
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            if (!ok[u])
                continue;
#pragma unroll
            for (int c = 0; c < CPL; ++c)
            {
                float vf[E];
                chunk_to_float<T, VEC>(vv[u][c], vf);
#pragma unroll
                for (int g = 0; g < GT; ++g)
#pragma unroll
                    for (int e = 0; e < E; ++e)
                        acc[g][c][e] = fmaf(sc[u][g], vf[e], acc[g][c][e]);
            }
        }
    }

    // 3. Merge the warps: the accumulators summed across the row groups of a warp with shuffles, then each warp's
    // (max, denominator, sums) through shared memory, combined in warp order (deterministic, unlike atomics).
#pragma unroll
    for (int g = 0; g < GT; ++g)
#pragma unroll
        for (int c = 0; c < CPL; ++c)
#pragma unroll
            for (int e = 0; e < E; ++e)
                for (int off = lpr; off < 32; off <<= 1)
                    acc[g][c][e] += __shfl_xor_sync(0xffffffffu, acc[g][c][e], off);
    if (lane == 0)
#pragma unroll
        for (int g = 0; g < GT; ++g)
        {
            s_red[warp * GT + g] = m_w[g];
            s_red[(kDecodeWarps + warp) * GT + g] = l_w[g];
        }
    // The block's max of head g and warp k's factor exp(m_k - max) (0 for a warp that saw no valid key).
    auto block_max = [&](int g) {
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < kDecodeWarps; ++k)
            m = fmaxf(m, s_red[k * GT + g]);
        return m;
    };
    auto factor = [&](int k, int g, float m) {
        float const mk = s_red[k * GT + g];
        return mk == -INFINITY ? 0.f : __expf(mk - m);
    };
    if (wide) // every warp's sums side by side, then added up in warp order: one barrier
    {
        if (rg == 0)
#pragma unroll
            for (int c = 0; c < CPL; ++c)
            {
                int const ci = sub + c * lpr;
                if (ci < chunks)
#pragma unroll
                    for (int g = 0; g < GT; ++g)
#pragma unroll
                        for (int e = 0; e < E; ++e)
                            s_part[(warp * GT + g) * p.hd + ci * E + e] = acc[g][c][e];
            }
        __syncthreads();
        for (int i = threadIdx.x; i < ng * p.hd; i += kDecodeThreads)
        {
            int const g = i / p.hd;
            float const m = block_max(g);
            float o = 0.f;
#pragma unroll
            for (int k = 0; k < kDecodeWarps; ++k)
                o += s_part[k * GT * p.hd + i] * factor(k, g, m);
            s_out[i] = o; // read below by this thread only
        }
    }
    else // one warp after the other into s_out (a barrier each: less shared memory)
    {
        __syncthreads(); // s_red
        for (int i = 0; i < kDecodeWarps; ++i)
        {
            if (warp == i && rg == 0)
#pragma unroll
                for (int g = 0; g < GT; ++g)
                {
                    float const f = factor(i, g, block_max(g));
#pragma unroll
                    for (int c = 0; c < CPL; ++c)
                    {
                        int const ci = sub + c * lpr;
                        if (ci < chunks)
#pragma unroll
                            for (int e = 0; e < E; ++e)
                            {
                                float* o = &s_out[g * p.hd + ci * E + e];
                                *o = (i == 0 ? 0.f : *o) + acc[g][c][e] * f;
                            }
                    }
                }
            __syncthreads();
        }
    }
    // head g's block max and denominator
    auto block_stats = [&](int g, float& m, float& l) {
        m = block_max(g);
        l = 0.f;
#pragma unroll
        for (int k = 0; k < kDecodeWarps; ++k)
            l += s_red[(kDecodeWarps + k) * GT + g] * factor(k, g, m);
    };

    T* out = static_cast<T*>(p.out) + (size_t(b) * p.nh + kvh * p.group + g0) * p.hd; // (ng, hd)
    if (active == 1)
    {
        for (int i = threadIdx.x; i < ng * p.hd; i += kDecodeThreads)
        {
            float m, l;
            block_stats(i / p.hd, m, l);
            out[i] = from_f32<T>(l > 0.f ? s_out[i] / l : 0.f); // no valid key: zeros
        }
        return;
    }

    // 6. Split: this block's (max, denominator, unnormalised sums) per head into the partials; the block that
    // finishes last for this (b, kv head, pass) merges them all and resets the ticket for the next launch.
    int const stride = p.hd + 2; // floats per (split, head): m, l, acc[hd]
    size_t const tuple = size_t(blockIdx.x) * gridDim.y + blockIdx.y;
    float* part = split.partial + tuple * split.splits * GT * stride;
    float* mine = part + size_t(blockIdx.z) * GT * stride;
    for (int i = threadIdx.x; i < ng * p.hd; i += kDecodeThreads)
        mine[(i / p.hd) * stride + 2 + i % p.hd] = s_out[i];
    if (int(threadIdx.x) < ng)
    {
        float m, l;
        block_stats(threadIdx.x, m, l);
        mine[threadIdx.x * stride] = m;
        mine[threadIdx.x * stride + 1] = l;
    }
    __threadfence(); // the partials are visible device-wide before the ticket is taken
    __syncthreads();
    __shared__ bool s_last;
    if (threadIdx.x == 0)
        s_last = atomicAdd(split.tickets + tuple, 1u) == unsigned(active - 1);
    __syncthreads();
    if (!s_last)
        return;
    __threadfence();
    for (int i = threadIdx.x; i < ng * p.hd; i += kDecodeThreads)
    {
        int const g = i / p.hd, d = i % p.hd;
        float mx = -INFINITY;
        for (int s = 0; s < active; ++s)
            mx = fmaxf(mx, __ldcg(part + (size_t(s) * GT + g) * stride));
        float l = 0.f, o = 0.f;
        if (mx != -INFINITY)
            for (int s = 0; s < active; ++s)
            {
                float const* ps = part + (size_t(s) * GT + g) * stride;
                float const m = __ldcg(ps);
                float const f = m == -INFINITY ? 0.f : __expf(m - mx);
                l += __ldcg(ps + 1) * f;
                o += __ldcg(ps + 2 + d) * f;
            }
        out[i] = from_f32<T>(l > 0.f ? o / l : 0.f); // no valid key: zeros
    }
    if (threadIdx.x == 0)
        split.tickets[tuple] = 0u;
}

// Host-side launch

inline int next_pow2(int x)
{
    int p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

// Query heads one decode block handles (GT): at most 8 bounds the registers; larger groups re-read K/V per pass (from
// L2, as the passes of a (b, kv head) run together).
inline int decode_heads_per_pass(int group)
{
    return group >= 8 ? 8 : next_pow2(group);
}


// Blocks per (b, kv head, pass) for a decode step: 1 when the unsplit grid already has a block per multiprocessor
// (`sms`), else enough to give every multiprocessor one, at most 16 and at least kMinKeysPerSplit cache rows each
// (the kernel runs fewer where the valid prefix is short: the others leave at once). `knob` > 0
// forces that many where the grid would split (an A/B knob, TRTLLM_KIT_SPLIT_KV; 1 never splits), 0 means the
// default. Why: one block per kv head ran 32 blocks on an H200's 132 multiprocessors at batch 1, 10 us per layer
// for llama-7b (ninth session's profile).
inline int decode_splits(AttnParams const& p, int sms, int knob)
{
    int const gt = decode_heads_per_pass(p.group);
    long long const tuples = (long long) p.B * p.nkv * ((p.group + gt - 1) / gt);
    if (tuples >= sms || tuples == 0)
        return 1;
    if (knob > 0)
        return std::min(knob, kMaxDecodeSplits);
    int const most = std::max(1, std::min(kMaxDecodeSplits, p.M / kMinKeysPerSplit));
    return int(std::min<long long>(most, (sms + tuples - 1) / tuples));
}

// The split buffers: `sms` tickets first (decode_splits splits only grids of fewer tuples; zero at rest, so that one
// zeroing at allocation serves every later shape), then the partials at a 256-byte boundary.
inline size_t decode_ticket_bytes(int sms)
{
    return (size_t(sms) * sizeof(unsigned) + 255) / 256 * 256;
}

inline size_t decode_split_bytes(AttnParams const& p, int splits, int sms)
{
    int const gt = decode_heads_per_pass(p.group);
    size_t const tuples = size_t(p.B) * p.nkv * ((p.group + gt - 1) / gt);
    return decode_ticket_bytes(sms) + tuples * splits * gt * (p.hd + 2) * sizeof(float);
}

// The split buffers laid out in `base` (decode_split_bytes(p, splits, sms) of them, zeroed once by the caller).
inline DecodeSplit decode_split_at(AttnParams const& p, int splits, void* base, int sms)
{
    DecodeSplit s;
    s.splits = splits;
    s.tickets = static_cast<unsigned*>(base);
    s.partial = reinterpret_cast<float*>(static_cast<char*>(base) + decode_ticket_bytes(sms));
    return s;
}

template <typename T, int VEC, int CPL, int GT>
cudaError_t launch_decode_impl(AttnParams const& p, int lpr, DecodeSplit const& split, cudaStream_t stream)
{
    // The warps' sums side by side where they take at most 16 KB (always at one or two heads per pass).
    bool const wide = kDecodeWarps * GT * p.hd * int(sizeof(float)) <= 16 * 1024;
    size_t const smem = size_t(GT * p.hd + 2 * kDecodeWarps * GT + (wide ? kDecodeWarps * GT * p.hd : 0)) * sizeof(float);
    dim3 const grid(unsigned(p.B) * unsigned(p.nkv), unsigned((p.group + GT - 1) / GT), unsigned(split.splits));
    AttnParams q = p;
    if (q.prefetch < 0) // auto: launched early (PDL) and one block per multiprocessor or fewer without the splits
        q.prefetch = pdl_enabled() && size_t(grid.x) * grid.y <= size_t(device_sms()) ? kPrefetchRows : 0;
    return launch_kernel(pdl_enabled(), decode_attention_kernel<T, VEC, CPL, GT>, grid,
        dim3(kDecodeThreads), smem, stream, q, lpr, split, wide);
}

template <typename T, int VEC, int CPL>
cudaError_t launch_decode_gt(AttnParams const& p, int lpr, DecodeSplit const& split, cudaStream_t stream)
{
    switch (decode_heads_per_pass(p.group))
    {
    case 1: return launch_decode_impl<T, VEC, CPL, 1>(p, lpr, split, stream);
    case 2: return launch_decode_impl<T, VEC, CPL, 2>(p, lpr, split, stream);
    case 4: return launch_decode_impl<T, VEC, CPL, 4>(p, lpr, split, stream);
    default: return launch_decode_impl<T, VEC, CPL, 8>(p, lpr, split, stream);
    }
}

template <typename T>
cudaError_t launch_decode(AttnParams const& p, DecodeSplit const& split, cudaStream_t stream)
{
    int const row_bytes = p.hd * int(sizeof(T));
    if (row_bytes % 16 == 0)
    {
        // Fast path (hd a multiple of 8 for 2-byte types, of 4 for float): 16-byte chunks.
        int const chunks = row_bytes / 16;
        int const lpr = chunks >= 32 ? 32 : next_pow2(chunks);
        if (chunks <= 32)
            return launch_decode_gt<T, 16, 1>(p, lpr, split, stream);
        if constexpr (sizeof(T) == 4) // float rows of up to 1 KB: two chunks per lane
            return launch_decode_gt<T, 16, 2>(p, lpr, split, stream);
        return cudaErrorInvalidValue;
    }
    // Any other even hd: element pairs, hd / 2 <= 128 chunks, up to 4 per lane.
    int const chunks = p.hd / 2;
    int const lpr = chunks >= 32 ? 32 : next_pow2(chunks);
    return launch_decode_gt<T, 2 * sizeof(T), 4>(p, lpr, split, stream);
}

} // namespace trtllm_kit

// TrtllmKitKVCacheAttention: one decoder layer's attention with an in-place KV cache, as a TensorRT
// IPluginV2DynamicExt that builds against the TensorRT 8.6 and 10.x headers.
//
// Inputs (linear layout; T = half, float, or bf16 where TensorRT has it):
//   0 q              T      (B, nh, S, hd)   rotary applied, already scaled by 1/sqrt(hd)
//   1 k              T      (B, nkv, S, hd)  this step's keys (rotary applied)
//   2 v              T      (B, nkv, S, hd)  this step's values
//   3 k_cache        T      (B, nkv, M, hd)  M = max_seq (static)
//   4 v_cache        T      (B, nkv, M, hd)
//   5 write_indices  int32  (B,)             tokens already cached per row = where new token 0 goes
//   6 attention_mask int32  (B, M)           1 for real tokens (cached or new), 0 for padding
// Outputs:
//   0 out            T      (B, nh, S, hd)
//   1 k_cache_out    T      (B, nkv, M, hd)  normally the same buffer as input 3 (in place)
//   2 v_cache_out    T      (B, nkv, M, hd)  normally the same buffer as input 4
//
// Query (b, h, s) sits at position w[b] + s and attends to keys t <= w[b] + s with mask[b, t] != 0;
// query head h uses kv head h / (nh / nkv). Shapes are read from the tensor descriptors at every
// enqueue: each layer of a width-pruned model has its own nh, nkv, hd.
//
// Kernels (all on the given stream, no synchronisation: capturable in a CUDA graph):
//   decode_attention_kernel   S == 1 (decode_attention.cuh): blocks per (b, kv head) that also write the new row,
//                             each handling all query heads of the group at once, so each cached K/V byte is read
//                             once per step. When B * kv heads leaves multiprocessors idle (batch 1), each (b, kv
//                             head) splits its keys over several blocks and the last one to finish merges their
//                             partial softmax sums (split-KV; TRTLLM_KIT_SPLIT_KV=N forces N blocks, 1 turns it off).
//                             The partials and the blocks' tickets live in a buffer the plugin allocates at its
//                             first split decode outside a stream capture (the runner's uncaptured warm-up step);
//                             a captured step with no buffer yet runs unsplit.
//   append_kv_kernel          S > 1: writes the S new rows into the cache.
//   prefill_attention_kernel  S > 1: flash-style tiles (64 query rows x 64 keys), online softmax.
// Keys and values are read from the OUTPUT cache (prefill: after this step's rows are written; decode: the new row
// comes from k and v themselves while it is written, so that no read waits for the write).

// TensorRT 10 marks the IPluginV2 family deprecated; it is still the one interface that both 8.6
// and 10.x load, so silence the deprecation warnings (EDG front end and host compiler alike).
#pragma nv_diag_suppress 1444
#pragma nv_diag_suppress 1215
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
// IPluginV2DynamicExt hides the implicit-batch overloads of its bases on purpose.
#pragma nv_diag_suppress 997

#include "plugin_common.cuh"
#include "decode_attention.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define TRTLLM_KIT_STR2(x) #x
#define TRTLLM_KIT_STR(x) TRTLLM_KIT_STR2(x)

namespace
{

constexpr char const* kPluginName = "TrtllmKitKVCacheAttention";
constexpr char const* kPluginVersion = "1";
constexpr int32_t kNbInputs = 7;
constexpr int32_t kNbOutputs = 3;

using trtllm_kit::AttnParams;
using trtllm_kit::DecodeSplit;
using trtllm_kit::kMaxHeadDim;
using trtllm_kit::launch_decode;
using trtllm_kit::load2;

// ------------------------------------------------------------------------------------------------
// Prefill (S > 1)
// ------------------------------------------------------------------------------------------------

// Grid-stride copy of the S new rows of k and v into the cache at rows w[b] + s (guarded to < M).
// W is the copy word (16 bytes when a row is a multiple of 16 bytes, else 4).
template <typename W>
__global__ void append_kv_kernel(AttnParams p, int words_per_row)
{
    size_t const total = size_t(p.B) * p.nkv * p.S * words_per_row;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x)
    {
        size_t const row = i / words_per_row; // (b, kvh, s) flattened
        int const word = int(i % words_per_row);
        int const s = int(row % p.S);
        size_t const bh = row / p.S;
        int const b = int(bh / p.nkv);
        long long const pos = (long long) p.write_idx[b] + s;
        if (pos < 0 || pos >= p.M)
            continue;
        size_t const dst = (bh * p.M + pos) * words_per_row + word;
        static_cast<W*>(p.k_cache)[dst] = static_cast<W const*>(p.k)[i];
        static_cast<W*>(p.v_cache)[dst] = static_cast<W const*>(p.v)[i];
    }
}

constexpr int kBR = 64; // query rows per block: (s, g) pairs of one kv head, row r = s * group + g
constexpr int kBC = 64; // keys per tile
constexpr int kDK = 32; // head-dim slice for Q K^T
constexpr int kVK = 16; // keys per V slice
static_assert(kBR == kBC, "the Q and K slices are loaded by one loop");

// Grid (ceil(group * S / kBR), nkv, B); block 256 threads as 16 x 16 (ty, tx). Thread (ty, tx) owns
// query rows ty*4 .. ty*4+3, keys tx + 16 j of each tile, and output dims tx + 16 j (j < DPT), so
// hd <= 16 * DPT. Everything is fp32 in shared memory; Q K^T is tiled over the head dim so shared
// memory does not depend on hd beyond the V slice.
template <typename T, int DPT>
__global__ void __launch_bounds__(256) prefill_attention_kernel(AttnParams p)
{
    constexpr int HD = 16 * DPT;
    __shared__ union
    {
        struct
        {
            float q[kBR][kDK + 1]; // +1: rows in different banks
            float k[kBC][kDK + 1];
        } qk;
        float v[kVK][HD];
    } sm;
    __shared__ float s_p[kBR][kBC + 1]; // probabilities of the tile
    __shared__ int s_ok[kBC];           // key in range and not masked

    int const tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int const b = blockIdx.z, kvh = blockIdx.y, r0 = blockIdx.x * kBR;
    int const G = p.group, rows = G * p.S;
    int const w = min(max(p.write_idx[b], -p.S), p.M); // clamped: no overflow in w + s below
    int const s_last = min(p.S - 1, (r0 + kBR - 1) / G);
    int const kv_end = min(p.M, w + s_last + 1); // keys this tile can attend to: [0, kv_end)

    T const* qb = static_cast<T const*>(p.q) + (size_t(b) * p.nh + size_t(kvh) * G) * p.S * p.hd; // (G, S, hd)
    size_t const bh = size_t(b) * p.nkv + kvh;
    T const* kb = static_cast<T const*>(p.k_cache) + bh * p.M * p.hd; // (M, hd)
    T const* vb = static_cast<T const*>(p.v_cache) + bh * p.M * p.hd; // (M, hd)
    int32_t const* mrow = p.mask + size_t(b) * p.M;

    int qpos[4];
    bool rvalid[4];
    float m[4], l[4], acc[4][DPT];
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        int const r = r0 + ty * 4 + i;
        rvalid[i] = r < rows;
        qpos[i] = w + r / G;
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int j = 0; j < DPT; ++j)
            acc[i][j] = 0.f;
    }

    for (int kt0 = 0; kt0 < kv_end; kt0 += kBC)
    {
        if (threadIdx.x < kBC)
        {
            int const t = kt0 + threadIdx.x;
            s_ok[threadIdx.x] = t < kv_end && mrow[t] != 0;
        }
        __syncthreads();

        // Scores of 4 rows x 4 keys per thread.
        float sc[4][4] = {};
        for (int d0 = 0; d0 < p.hd; d0 += kDK)
        {
            for (int idx = threadIdx.x; idx < kBR * kDK / 2; idx += 256)
            {
                int const row = idx / (kDK / 2), dd = 2 * (idx % (kDK / 2)), d = d0 + dd;
                int const r = r0 + row;
                float2 qf = make_float2(0.f, 0.f), kf = make_float2(0.f, 0.f);
                if (r < rows && d < p.hd)
                    qf = load2(qb + (size_t(r % G) * p.S + r / G) * p.hd + d);
                if (s_ok[row] && d < p.hd) // masked slots may hold garbage: load zeros instead
                    kf = load2(kb + size_t(kt0 + row) * p.hd + d);
                sm.qk.q[row][dd] = qf.x;
                sm.qk.q[row][dd + 1] = qf.y;
                sm.qk.k[row][dd] = kf.x;
                sm.qk.k[row][dd + 1] = kf.y;
            }
            __syncthreads();
#pragma unroll 8
            for (int dd = 0; dd < kDK; ++dd)
            {
                float a[4], c[4];
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    a[i] = sm.qk.q[ty * 4 + i][dd];
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    c[j] = sm.qk.k[tx + 16 * j][dd];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        sc[i][j] = fmaf(a[i], c[j], sc[i][j]);
            }
            __syncthreads();
        }

        // Online softmax per row; the 16 threads of a row are 16 consecutive lanes.
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; ++j)
            {
                int const key = tx + 16 * j;
                bool const ok = rvalid[i] && s_ok[key] && kt0 + key <= qpos[i];
                sc[i][j] = ok ? sc[i][j] : -INFINITY;
                mx = fmaxf(mx, sc[i][j]);
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            float const m_new = fmaxf(m[i], mx);
            float const alpha = m_new == -INFINITY ? 1.f : __expf(m[i] - m_new);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < 4; ++j)
            {
                float const pr = sc[i][j] == -INFINITY ? 0.f : __expf(sc[i][j] - m_new);
                s_p[ty * 4 + i][tx + 16 * j] = pr;
                sum += pr;
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, off);
            l[i] = l[i] * alpha + sum;
            m[i] = m_new;
#pragma unroll
            for (int j = 0; j < DPT; ++j)
                acc[i][j] *= alpha;
        }
        __syncthreads(); // s_p complete; sm.qk free for the V slices

        for (int v0 = 0; v0 < kBC && kt0 + v0 < kv_end; v0 += kVK)
        {
            for (int idx = threadIdx.x; idx < kVK * HD / 2; idx += 256)
            {
                int const kk = idx / (HD / 2), d = 2 * (idx % (HD / 2));
                float2 vf = make_float2(0.f, 0.f);
                if (d < p.hd && s_ok[v0 + kk])
                    vf = load2(vb + size_t(kt0 + v0 + kk) * p.hd + d);
                sm.v[kk][d] = vf.x;
                sm.v[kk][d + 1] = vf.y;
            }
            __syncthreads();
#pragma unroll 4
            for (int kk = 0; kk < kVK; ++kk)
            {
                float pr[4];
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    pr[i] = s_p[ty * 4 + i][v0 + kk];
#pragma unroll
                for (int j = 0; j < DPT; ++j)
                {
                    float const vv = sm.v[kk][tx + 16 * j];
#pragma unroll
                    for (int i = 0; i < 4; ++i)
                        acc[i][j] = fmaf(pr[i], vv, acc[i][j]);
                }
            }
            __syncthreads();
        }
    }

#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        if (!rvalid[i])
            continue;
        int const r = r0 + ty * 4 + i;
        int const g = r % G, s = r / G;
        T* o = static_cast<T*>(p.out) + ((size_t(b) * p.nh + size_t(kvh) * G + g) * p.S + s) * p.hd;
        float const inv = l[i] > 0.f ? 1.f / l[i] : 0.f; // no valid key: zeros
#pragma unroll
        for (int j = 0; j < DPT; ++j)
        {
            int const d = tx + 16 * j;
            if (d < p.hd)
                o[d] = trtllm_kit::from_f32<T>(acc[i][j] * inv);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Host-side launch
// ------------------------------------------------------------------------------------------------

template <typename T>
cudaError_t launch_prefill(AttnParams const& p, cudaStream_t stream)
{
    int const row_bytes = p.hd * int(sizeof(T));
    size_t const words = row_bytes % 16 == 0 ? row_bytes / 16 : row_bytes / 4;
    size_t const total = size_t(p.B) * p.nkv * p.S * words;
    unsigned const blocks = unsigned(std::min<size_t>((total + 255) / 256, 65536));
    if (row_bytes % 16 == 0)
        append_kv_kernel<uint4><<<blocks, 256, 0, stream>>>(p, int(words));
    else
        append_kv_kernel<uint32_t><<<blocks, 256, 0, stream>>>(p, int(words));
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return err;

    dim3 const grid(unsigned((p.group * p.S + kBR - 1) / kBR), unsigned(p.nkv), unsigned(p.B));
    if (p.hd <= 64)
        prefill_attention_kernel<T, 4><<<grid, 256, 0, stream>>>(p);
    else if (p.hd <= 128)
        prefill_attention_kernel<T, 8><<<grid, 256, 0, stream>>>(p);
    else
        prefill_attention_kernel<T, 16><<<grid, 256, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_attention(AttnParams const& p, DecodeSplit const& split, cudaStream_t stream)
{
    return p.S == 1 ? launch_decode<T>(p, split, stream) : launch_prefill<T>(p, stream);
}

size_t element_size(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kFLOAT ? 4 : 2;
}

// ------------------------------------------------------------------------------------------------
// Plugin
// ------------------------------------------------------------------------------------------------

class KVCacheAttentionPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    KVCacheAttentionPlugin(int32_t numHeads, int32_t numKVHeads, int32_t headDim)
        : mNumHeads(numHeads)
        , mNumKVHeads(numKVHeads)
        , mHeadDim(headDim)
    {
        char const* env = std::getenv("TRTLLM_KIT_SPLIT_KV");
        mSplitKnob = env ? std::atoi(env) : 0;
    }
    ~KVCacheAttentionPlugin() override { releaseSplit(); }
    KVCacheAttentionPlugin(KVCacheAttentionPlugin const&) = delete;
    KVCacheAttentionPlugin& operator=(KVCacheAttentionPlugin const&) = delete;

    // Valid field values, or a message saying which is wrong (used by the creator and deserializer).
    static std::string checkFields(int32_t nh, int32_t nkv, int32_t hd)
    {
        char buf[256];
        if (nh <= 0 || nkv <= 0 || nh % nkv != 0)
            std::snprintf(buf, sizeof(buf), "num_heads=%d must be a positive multiple of num_kv_heads=%d", nh, nkv);
        else if (hd <= 0 || hd % 2 != 0 || hd > kMaxHeadDim)
            std::snprintf(buf, sizeof(buf), "head_dim=%d must be even and at most %d", hd, kMaxHeadDim);
        else
            return {};
        return buf;
    }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    int32_t getNbOutputs() const noexcept override { return kNbOutputs; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override { releaseSplit(); }
    size_t getSerializationSize() const noexcept override { return 3 * sizeof(int32_t); }
    void serialize(void* buffer) const noexcept override
    {
        int32_t const fields[3] = {mNumHeads, mNumKVHeads, mHeadDim};
        std::memcpy(buffer, fields, sizeof(fields));
    }
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
        auto* p = new (std::nothrow) KVCacheAttentionPlugin(mNumHeads, mNumKVHeads, mHeadDim);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
        int32_t nbInputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        // out = q's shape; the cache outputs are the cache inputs (same buffers when in place).
        if (nbInputs == kNbInputs && outputIndex == 0)
            checkConstantDims(inputs);
        int32_t const src[kNbOutputs] = {0, 3, 4};
        return inputs[src[outputIndex >= 0 && outputIndex < kNbOutputs ? outputIndex : 0]];
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        if (pos == 5 || pos == 6) // write_indices, attention_mask
            return d.type == nvinfer1::DataType::kINT32;
        if (pos == 0)
            return trtllm_kit::float_type(d.type);
        return d.type == inOut[0].type; // k, v, caches and all outputs share q's type
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        // configurePlugin cannot fail; a mismatch is reported here and makes enqueue fail.
        mConfigError.clear();
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            mConfigError = "expected 7 inputs and 3 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs);
        }
        else
        {
            nvinfer1::Dims dims[kNbInputs];
            for (int32_t i = 0; i < kNbInputs; ++i)
                dims[i] = in[i].desc.dims; // -1 where dynamic
            mConfigError = checkDims(dims, /*allowDynamic=*/true);
        }
        (void) out;
        if (!mConfigError.empty())
            trtllm_kit::plugin_error(kPluginName, "%s", mConfigError.c_str());
    }

    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override
    {
        if (!mConfigError.empty())
        {
            trtllm_kit::plugin_error(kPluginName, "%s", mConfigError.c_str());
            return 1;
        }
        nvinfer1::Dims dims[kNbInputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
            dims[i] = inputDesc[i].dims;
        std::string const err = checkDims(dims, /*allowDynamic=*/false);
        if (!err.empty())
        {
            trtllm_kit::plugin_error(kPluginName, "%s", err.c_str());
            return 1;
        }
        nvinfer1::Dims const& qd = inputDesc[0].dims; // (B, nh, S, hd)
        AttnParams p{};
        p.q = inputs[0];
        p.k = inputs[1];
        p.v = inputs[2];
        p.k_cache = outputs[1];
        p.v_cache = outputs[2];
        p.write_idx = static_cast<int32_t const*>(inputs[5]);
        p.mask = static_cast<int32_t const*>(inputs[6]);
        p.out = outputs[0];
        p.B = qd.d[0];
        p.nh = qd.d[1];
        p.S = qd.d[2];
        p.hd = qd.d[3];
        p.nkv = inputDesc[1].dims.d[1];
        p.M = inputDesc[3].dims.d[2];
        p.group = p.nh / p.nkv;
        if (p.B > 65535)
        {
            trtllm_kit::plugin_error(kPluginName, "batch %d exceeds the 65535 this plugin supports", p.B);
            return 1;
        }

        // In place, TensorRT hands the same buffer as cache input and output and only the new rows
        // are written. Given distinct buffers, carry the old cache over first.
        size_t const cache_bytes = size_t(p.B) * p.nkv * p.M * p.hd * element_size(inputDesc[0].type);
        for (int i = 0; i < 2; ++i)
        {
            if (outputs[1 + i] != inputs[3 + i] && cache_bytes > 0)
            {
                cudaError_t const e = cudaMemcpyAsync(
                    outputs[1 + i], inputs[3 + i], cache_bytes, cudaMemcpyDeviceToDevice, stream);
                if (e != cudaSuccess)
                {
                    trtllm_kit::plugin_error(kPluginName, "cache copy failed: %s", cudaGetErrorString(e));
                    return 1;
                }
            }
        }
        if (p.B == 0 || p.S == 0 || p.nh == 0)
            return 0;
        DecodeSplit const split = p.S == 1 ? decodeSplit(p, stream) : DecodeSplit{};

        cudaError_t e = cudaErrorInvalidValue;
        switch (inputDesc[0].type)
        {
        case nvinfer1::DataType::kHALF: e = launch_attention<__half>(p, split, stream); break;
        case nvinfer1::DataType::kFLOAT: e = launch_attention<float>(p, split, stream); break;
#if TRTLLM_KIT_HAS_BF16
        case nvinfer1::DataType::kBF16: e = launch_attention<__nv_bfloat16>(p, split, stream); break;
#endif
        default: break;
        }
        if (e != cudaSuccess)
        {
            trtllm_kit::plugin_error(kPluginName, "kernel launch failed (B=%d nh=%d nkv=%d S=%d M=%d hd=%d): %s", p.B, p.nh, p.nkv, p.S, p.M,
                p.hd, cudaGetErrorString(e));
            return 1;
        }
        (void) outputDesc;
        return 0;
    }

private:
    // The split-KV buffers for this decode step (decode_attention.cuh), or no split: the decode grid already fills
    // the GPU, or the buffer would have to grow during a stream capture (allocation is not capturable), or it fails.
    // A grown buffer's predecessors stay allocated until the plugin is released: a captured graph may use them.
    DecodeSplit decodeSplit(AttnParams const& p, cudaStream_t stream)
    {
        if (mSms == 0)
        {
            int device = 0;
            if (cudaGetDevice(&device) != cudaSuccess
                || cudaDeviceGetAttribute(&mSms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
            {
                (void) cudaGetLastError();
                mSms = 1; // unknown: never split
            }
        }
        int const splits = trtllm_kit::decode_splits(p, mSms, mSplitKnob);
        if (splits <= 1)
            return {};
        size_t const need = trtllm_kit::decode_split_bytes(p, splits, mSms);
        if (need > mSplitBytes)
        {
            cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(stream, &status) != cudaSuccess || status != cudaStreamCaptureStatusNone)
            {
                (void) cudaGetLastError();
                return {};
            }
            void* buf = nullptr;
            if (cudaMalloc(&buf, need) != cudaSuccess)
            {
                (void) cudaGetLastError();
                return {};
            }
            if (cudaMemsetAsync(buf, 0, need, stream) != cudaSuccess) // the tickets start at zero
            {
                (void) cudaGetLastError();
                cudaFree(buf);
                return {};
            }
            if (mSplitBuf)
                mRetired.push_back(mSplitBuf);
            mSplitBuf = buf;
            mSplitBytes = need;
        }
        return trtllm_kit::decode_split_at(p, splits, mSplitBuf, mSms);
    }

    void releaseSplit() noexcept
    {
        mRetired.push_back(mSplitBuf);
        for (void* b : mRetired)
            if (b)
                cudaFree(b);
        mRetired.clear();
        mSplitBuf = nullptr;
        mSplitBytes = 0;
    }

    // Shapes against each other and against the fields; empty when consistent. With allowDynamic,
    // -1 dims (build time) are not checked.
    std::string checkDims(nvinfer1::Dims const* d, bool allowDynamic) const
    {
        char buf[512];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            int32_t const want = i == 5 ? 1 : i == 6 ? 2 : 4;
            if (d[i].nbDims != want)
            {
                std::snprintf(buf, sizeof(buf), "input %d has %d dims, expected %d", i, d[i].nbDims, want);
                return buf;
            }
        }
        auto bad = [&](int32_t have, int32_t want) { return have != want && !(allowDynamic && have < 0); };
        // (input, dim, expected value); an expected -1 (a dynamic dim of q at build time) is not checked.
        struct Check
        {
            int32_t input, dim, want;
            char const* what;
        };
        int32_t const B = d[0].d[0], S = d[0].d[2], M = d[3].d[2];
        Check const checks[] = {
            {0, 1, mNumHeads, "q dim 1 (num_heads)"},
            {0, 3, mHeadDim, "q dim 3 (head_dim)"},
            {1, 0, B, "k dim 0 (batch)"},
            {1, 1, mNumKVHeads, "k dim 1 (num_kv_heads)"},
            {1, 2, S, "k dim 2 (new tokens)"},
            {1, 3, mHeadDim, "k dim 3 (head_dim)"},
            {2, 0, B, "v dim 0 (batch)"},
            {2, 1, mNumKVHeads, "v dim 1 (num_kv_heads)"},
            {2, 2, S, "v dim 2 (new tokens)"},
            {2, 3, mHeadDim, "v dim 3 (head_dim)"},
            {3, 0, B, "k_cache dim 0 (batch)"},
            {3, 1, mNumKVHeads, "k_cache dim 1 (num_kv_heads)"},
            {3, 3, mHeadDim, "k_cache dim 3 (head_dim)"},
            {4, 0, B, "v_cache dim 0 (batch)"},
            {4, 1, mNumKVHeads, "v_cache dim 1 (num_kv_heads)"},
            {4, 2, M, "v_cache dim 2 (max_seq)"},
            {4, 3, mHeadDim, "v_cache dim 3 (head_dim)"},
            {5, 0, B, "write_indices dim 0 (batch)"},
            {6, 0, B, "attention_mask dim 0 (batch)"},
            {6, 1, M, "attention_mask dim 1 (max_seq)"},
        };
        for (Check const& c : checks)
        {
            int32_t const have = d[c.input].d[c.dim];
            if (c.want >= 0 && bad(have, c.want))
            {
                std::snprintf(buf, sizeof(buf),
                    "%s is %d, expected %d (plugin fields num_heads=%d num_kv_heads=%d head_dim=%d)", c.what, have,
                    c.want, mNumHeads, mNumKVHeads, mHeadDim);
                return buf;
            }
        }
        return {};
    }

    void checkConstantDims(nvinfer1::DimsExprs const* in) const
    {
        auto check = [&](int32_t input, int32_t dim, int32_t want, char const* what) {
            if (in[input].nbDims > dim && in[input].d[dim]->isConstant()
                && in[input].d[dim]->getConstantValue() != want)
                trtllm_kit::plugin_error(kPluginName, "%s is %d, expected %d", what, int(in[input].d[dim]->getConstantValue()), want);
        };
        check(0, 1, mNumHeads, "q dim 1 (num_heads)");
        check(0, 3, mHeadDim, "q dim 3 (head_dim)");
        check(1, 1, mNumKVHeads, "k dim 1 (num_kv_heads)");
        check(3, 1, mNumKVHeads, "k_cache dim 1 (num_kv_heads)");
        check(3, 3, mHeadDim, "k_cache dim 3 (head_dim)");
    }

    int32_t mNumHeads;
    int32_t mNumKVHeads;
    int32_t mHeadDim;
    std::string mNamespace;
    std::string mConfigError;
    int mSplitKnob = 0;            // TRTLLM_KIT_SPLIT_KV: 0 default, 1 never split, N > 1 that many blocks
    int mSms = 0;                  // multiprocessors of the device, read at the first decode
    void* mSplitBuf = nullptr;     // tickets (one per multiprocessor, zero at rest), then partials
    size_t mSplitBytes = 0;
    std::vector<void*> mRetired;   // smaller buffers a captured graph may still use
};

class KVCacheAttentionCreator final : public nvinfer1::IPluginCreator
{
public:
    KVCacheAttentionCreator()
    {
        for (char const* name : {"num_heads", "num_kv_heads", "head_dim"})
            mFields.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFieldCollection.nbFields = int32_t(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        int32_t values[3] = {-1, -1, -1};
        char const* const names[3] = {"num_heads", "num_kv_heads", "head_dim"};
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            for (int j = 0; j < 3; ++j)
            {
                if (f.name && std::strcmp(f.name, names[j]) == 0)
                {
                    if (f.type != nvinfer1::PluginFieldType::kINT32 || f.length < 1 || !f.data)
                    {
                        trtllm_kit::plugin_error(kPluginName, "%s: field %s must be one int32", name ? name : "", names[j]);
                        return nullptr;
                    }
                    values[j] = *static_cast<int32_t const*>(f.data);
                }
            }
        }
        for (int j = 0; j < 3; ++j)
        {
            if (values[j] < 0)
            {
                trtllm_kit::plugin_error(kPluginName, "%s: missing field %s", name ? name : "", names[j]);
                return nullptr;
            }
        }
        return make(name, values[0], values[1], values[2]);
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        if (!data || length != 3 * sizeof(int32_t))
        {
            trtllm_kit::plugin_error(kPluginName, "%s: serialized plugin has %zu bytes, expected %zu", name ? name : "", length,
                3 * sizeof(int32_t));
            return nullptr;
        }
        int32_t v[3];
        std::memcpy(v, data, sizeof(v));
        return make(name, v[0], v[1], v[2]);
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    nvinfer1::IPluginV2* make(char const* name, int32_t nh, int32_t nkv, int32_t hd) const noexcept
    {
        std::string const err = KVCacheAttentionPlugin::checkFields(nh, nkv, hd);
        if (!err.empty())
        {
            trtllm_kit::plugin_error(kPluginName, "%s: %s", name ? name : "", err.c_str());
            return nullptr;
        }
        auto* p = new (std::nothrow) KVCacheAttentionPlugin(nh, nkv, hd);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mNamespace;
};

} // namespace

REGISTER_TENSORRT_PLUGIN(KVCacheAttentionCreator);

// Diagnostics: which plugin this library holds and which TensorRT headers it was built against.
extern "C" char const* trtllmKitPluginInfo()
{
    return "TrtllmKitKVCacheAttention version 1, built against TensorRT " TRTLLM_KIT_STR(
        NV_TENSORRT_MAJOR) "." TRTLLM_KIT_STR(NV_TENSORRT_MINOR) "." TRTLLM_KIT_STR(NV_TENSORRT_PATCH);
}

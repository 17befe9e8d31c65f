// Probe: llama-7b's batch-1 decode step as the plugin engine runs it, with the plugins' own kernels and no TensorRT
// (not part of the toolkit; the kernels come from trtllm_kit/engine/plugin's headers, so it times what ships).
// Per block: the q/k/v GEMV (RMSNorm prologue, or with its scale in w), rotary (fused q/k/v; or the GEMV's rotary
// epilogue), decode attention over the in-place cache, the o GEMV (+ residual), the gate/up GEMV (RMSNorm prologue,
// SwiGLU epilogue or not), the down GEMV (SwiGLU prologue or not, + residual); then the LM head (RMSNorm prologue).
// Random fp16 weights, 32 blocks, the whole step captured as one CUDA graph (launches with PDL where TRTLLM_KIT_PDL
// allows, as in the engine) and replayed back to back: ms per step = the graph's mean time.
// Variants (the Config fields): split-KV attention (splits 1 = off, 0 = auto), its L2 prefetch of the cache rows,
// the folds, x staged or read directly by the GEMVs, loads per lane, the rotary epilogue, an attention kernel that only
// copies q (its launch and wait), and steps with a kernel kind left out (to place time by difference). --check
// compares split and unsplit attention with a float reference, GEMV variants and the rotary epilogue bit for bit.
// Build and run (on the H200):
//   nvcc -std=c++17 -O3 -arch=sm_90 -Itrtllm_kit/engine/plugin -o /tmp/step scripts/h200/decode_step_probe.cu
//   /tmp/step [--check]
#include "decode_attention.cuh"
#include "gemv.cuh"
#include "rotary_kernel.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#define CHECK(...)                                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t e_ = (__VA_ARGS__);                                                                                          \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #__VA_ARGS__, cudaGetErrorString(e_));                          \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

using namespace trtllm_kit;

constexpr int H = 4096, NH = 32, NKV = 32, HD = 128, I = 11008, V = 32000, LAYERS = 32, MAXSEQ = 640;
constexpr float EPS = 1e-6f;

__global__ void fill(__half* p, size_t n, uint32_t seed, float scale)
{
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2half((float(h & 0xffff) / 65535.f - 0.5f) * scale);
    }
}

__global__ void fill_int(int32_t* p, int n, int v)
{
    int const i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = v;
}

__half* alloc(size_t n, uint32_t seed, float scale)
{
    __half* p = nullptr;
    CHECK(cudaMalloc(&p, n * sizeof(__half)));
    fill<<<1024, 256>>>(p, n, seed, scale);
    CHECK(cudaGetLastError());
    return p;
}

struct Block
{
    __half *wqkv, *wo, *wgu, *wd, *g1, *g2, *kc, *vc;
};

struct Config
{
    std::string name;
    int splits = 0;     // decode attention blocks per kv head: 0 auto, 1 off
    bool swiglu_epilogue = false; // SwiGLU in the gate/up GEMV's epilogue (else the down GEMV's prologue)
    bool folds = true;            // norms, SwiGLU and residual adds folded into the GEMVs (false: plain GEMVs)
    bool norm_in_w = false;       // the norms' scales in the weights: the GEMV applies rsqrt(mean(x^2) + eps) last
    bool fold_norm = true, fold_residual = true; // which folds (with folds)
    int unroll = 4;     // GEMV loads in flight per lane
    int o_unroll = 0;   // the o GEMV's (after attention) if not 0: more of its weights streamed while attention runs
    int attn_prefetch = -1;         // decode attention's cache rows into L2 before it waits: -1 auto, 0 none
    bool direct_x = true;           // GEMVs read x from global memory (L1) instead of staging it in shared memory
    bool attention = true, rotary = true, gemv = true;
    bool rope_gemv = false;      // the rotary embedding in the q/k/v GEMV's epilogue (no rotary kernel)
    bool attention_stub = false; // a kernel that only copies q to the output instead of attention (its boundary)
};

// What an attention kernel costs at the least: launched as it is (PDL), waits, copies q to the output.
__global__ void attention_stub(__half const* q, __half* out, int n)
{
    wait_for_predecessor();
    allow_dependents();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = q[i];
}

// One GEMV with the folds f (the plugin's dispatch, fp16 scales).
cudaError_t gemv(Folds const& f, GemvLaunch const& l, void const* w, void const* x, void const* g, void const* r,
    void* y, int K, int N, cudaStream_t s)
{
    return gemv_folded(f, l, false, w, x, g, r, y, K, N, s);
}

struct Step
{
    std::vector<Block> blocks;
    __half *head, *gf, *h, *h2, *qkv, *q, *k, *v, *attn, *gu, *logits, *cos, *sin;
    int32_t *write, *mask;
    void* split_buf = nullptr;
    int sms = 0;

    GemvRope rope()
    {
        GemvRope r;
        r.q = q, r.k = k, r.v = v, r.cos = cos, r.sin = sin, r.table_float = false;
        r.nh = NH, r.nkv = NKV, r.hd = HD, r.scale = 1.f / std::sqrt(float(HD));
        return r;
    }

    void enqueue(Config const& c, cudaStream_t s)
    {
        GemvLaunch l;
        l.unroll = c.unroll;
        l.pdl = pdl_enabled();
        l.direct_x = c.direct_x;
        Folds const none{};
        Folds const norm = !c.folds || !c.fold_norm ? none : Folds{c.norm_in_w ? kRmsNormFolded : kRmsNorm, EPS, kPlain};
        Folds const res = c.folds && c.fold_residual ? Folds{kNone, 0.f, kResidual} : none;
        Folds const gate_up = c.folds && c.swiglu_epilogue ? Folds{norm.prologue, EPS, kSwiGluPair} : norm;
        Folds const down = !c.folds ? none : c.swiglu_epilogue ? res : Folds{kSwiGlu, 0.f, res.epilogue};
        int const gu_out = gate_up.epilogue == kSwiGluPair ? I : 2 * I;
        AttnParams p{};
        p.B = 1, p.nh = NH, p.nkv = NKV, p.S = 1, p.M = MAXSEQ, p.hd = HD, p.group = NH / NKV;
        p.q = q, p.k = k, p.v = v, p.write_idx = write, p.mask = mask, p.out = attn;
        p.prefetch = c.attn_prefetch;
        int const splits = c.splits == 1 ? 1 : decode_splits(p, sms, c.splits);
        DecodeSplit split = splits > 1 ? decode_split_at(p, splits, split_buf, sms) : DecodeSplit{};
        for (Block const& b : blocks)
        {
            if (c.gemv && c.rope_gemv)
            {
                GemvLaunch lr = l;
                lr.rope = rope();
                CHECK(gemv(Folds{norm.prologue, EPS, kRope}, lr, b.wqkv, h, b.g1, nullptr, nullptr, H, 3 * H, s));
            }
            else if (c.gemv)
                CHECK(gemv(norm, l, b.wqkv, h, b.g1, nullptr, qkv, H, 3 * H, s));
            if (c.rotary && !c.rope_gemv)
            {
                void const* in[3] = {qkv, cos, sin};
                void* out[3] = {q, k, v};
                CHECK(launch_rotary<__half, __half>(in, out, true, 1, 1, NH, NKV, HD, 1.f / std::sqrt(float(HD)), s));
            }
            if (c.attention_stub)
                CHECK(launch_kernel(pdl_enabled(), attention_stub, dim3(NH), dim3(kDecodeThreads), 0, s,
                    static_cast<__half const*>(q), attn, NH * HD));
            else if (c.attention)
            {
                p.k_cache = b.kc, p.v_cache = b.vc;
                CHECK(launch_decode<__half>(p, split, s));
            }
            if (c.gemv)
            {
                GemvLaunch lo = l;
                lo.unroll = c.o_unroll ? c.o_unroll : l.unroll;
                CHECK(gemv(res, lo, b.wo, attn, nullptr, h, h2, H, H, s));
                CHECK(gemv(gate_up, l, b.wgu, h2, b.g2, nullptr, gu, H, gu_out, s));
                CHECK(gemv(down, l, b.wd, gu, nullptr, h2, h, I, H, s));
            }
        }
        if (c.gemv)
            CHECK(gemv(norm, l, head, h, gf, nullptr, logits, H, V, s));
    }
};

// Mean ms per step over `reps` replays of one captured step, after warm-up replays.
float time_step(Step& st, Config const& c, cudaStream_t s, int reps = 200)
{
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    st.enqueue(c, s);
    CHECK(cudaStreamEndCapture(s, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 20; ++i)
        CHECK(cudaGraphLaunch(exec, s));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i)
        CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    return ms / reps;
}

void set_context(Step& st, int ctx)
{
    fill_int<<<1, 32>>>(st.write, 1, ctx); // keys 0..ctx, the new one at ctx
    CHECK(cudaDeviceSynchronize());
}

// Split against unsplit decode attention at several lengths and splits (max abs difference of the outputs).
int check(Step& st, cudaStream_t s)
{
    AttnParams p{};
    p.B = 1, p.nh = NH, p.nkv = NKV, p.S = 1, p.M = MAXSEQ, p.hd = HD, p.group = 1;
    p.q = st.q, p.k = st.k, p.v = st.v, p.write_idx = st.write, p.mask = st.mask;
    p.k_cache = st.blocks[0].kc, p.v_cache = st.blocks[0].vc;
    __half *ref = alloc(NH * HD, 1, 0.f), *got = alloc(NH * HD, 1, 0.f);
    std::vector<__half> a(NH * HD), b(NH * HD);
    int bad = 0;
    for (int ctx : {0, 1, 12, 63, 64, 100, 139, 300, 511, 639})
        for (int splits : {2, 3, 5, 8, 16})
        {
            set_context(st, ctx);
            p.out = ref;
            CHECK(launch_decode<__half>(p, DecodeSplit{}, s));
            p.out = got;
            CHECK(launch_decode<__half>(p, decode_split_at(p, splits, st.split_buf, st.sms), s));
            CHECK(cudaStreamSynchronize(s));
            CHECK(cudaMemcpy(a.data(), ref, a.size() * 2, cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(b.data(), got, b.size() * 2, cudaMemcpyDeviceToHost));
            float worst = 0.f, scale = 0.f;
            for (size_t i = 0; i < a.size(); ++i)
            {
                worst = std::max(worst, std::fabs(__half2float(a[i]) - __half2float(b[i])));
                scale = std::max(scale, std::fabs(__half2float(a[i])));
            }
            bool const ok = worst <= 2e-3f + 1e-2f * scale && std::isfinite(worst);
            bad += !ok;
            std::printf("check ctx %3d splits %2d: max |split - unsplit| %.2e (max |out| %.3f) %s\n", ctx, splits, worst,
                scale, ok ? "ok" : "FAIL");
            if (splits == 5) // both against a float reference on the host (the cache now holds the new row too)
            {
                std::vector<__half> q(NH * HD), kc(size_t(NKV) * MAXSEQ * HD), vc(kc.size());
                CHECK(cudaMemcpy(q.data(), st.q, q.size() * 2, cudaMemcpyDeviceToHost));
                CHECK(cudaMemcpy(kc.data(), st.blocks[0].kc, kc.size() * 2, cudaMemcpyDeviceToHost));
                CHECK(cudaMemcpy(vc.data(), st.blocks[0].vc, vc.size() * 2, cudaMemcpyDeviceToHost));
                float err = 0.f;
                for (int h = 0; h < NH; ++h)
                {
                    std::vector<float> sc(ctx + 1);
                    float mx = -INFINITY, l = 0.f;
                    for (int t = 0; t <= ctx; ++t)
                    {
                        float d = 0.f;
                        for (int e = 0; e < HD; ++e)
                            d += __half2float(q[h * HD + e]) * __half2float(kc[(size_t(h) * MAXSEQ + t) * HD + e]);
                        sc[t] = d;
                        mx = std::max(mx, d);
                    }
                    for (int t = 0; t <= ctx; ++t)
                        l += sc[t] = std::exp(sc[t] - mx);
                    for (int e = 0; e < HD; ++e)
                    {
                        float o = 0.f;
                        for (int t = 0; t <= ctx; ++t)
                            o += sc[t] * __half2float(vc[(size_t(h) * MAXSEQ + t) * HD + e]);
                        o /= l;
                        err = std::max({err, std::fabs(o - __half2float(a[h * HD + e])),
                            std::fabs(o - __half2float(b[h * HD + e]))});
                    }
                }
                bool const near = err <= 4e-3f;
                bad += !near;
                std::printf("check ctx %3d: max |kernel - float reference| %.2e %s\n", ctx, err, near ? "ok" : "FAIL");
            }
        }
    // The GEMV at 4 and 8 loads per lane: the same sums in the same order, so the same bits.
    __half *y1 = alloc(2 * I, 1, 0.f), *y2 = alloc(2 * I, 1, 0.f);
    std::vector<__half> c(2 * I), d(2 * I);
    Block const& blk = st.blocks[0];
    struct Case
    {
        char const* name;
        Folds f;
        __half const *w, *x, *g;
        int K, N;
    } const cases[] = {
        {"q/k/v, RMSNorm", Folds{kRmsNorm, EPS, kPlain}, blk.wqkv, st.h, blk.g1, H, 3 * H},
        {"o, residual", Folds{kNone, 0.f, kResidual}, blk.wo, st.attn, nullptr, H, H},
        {"gate/up, RMSNorm + SwiGLU", Folds{kRmsNorm, EPS, kSwiGluPair}, blk.wgu, st.h, blk.g2, H, I},
        {"down, SwiGLU + residual", Folds{kSwiGlu, 0.f, kResidual}, blk.wd, st.gu, nullptr, I, H},
        {"head, RMSNorm", Folds{kRmsNorm, EPS, kPlain}, st.head, st.h, st.gf, H, V},
        {"q/k/v, norm in w", Folds{kRmsNormFolded, EPS, kPlain}, blk.wqkv, st.h, nullptr, H, 3 * H},
        {"gate/up, norm in w + SwiGLU", Folds{kRmsNormFolded, EPS, kSwiGluPair}, blk.wgu, st.h, nullptr, H, I},
        {"down, residual", Folds{kNone, 0.f, kResidual}, blk.wd, st.gu, nullptr, I, H},
    };
    for (Case const& k : cases)
        for (int unroll : {8, 16, 0}) // 0: x read directly (where the prologue allows)
        {
            GemvLaunch one, many;
            many.unroll = unroll ? unroll : 4;
            many.direct_x = unroll == 0;
            one.pdl = many.pdl = pdl_enabled();
            size_t const n = std::min<size_t>(k.N, c.size());
            __half* out1 = k.N <= 2 * I ? y1 : st.logits;
            CHECK(gemv(k.f, one, k.w, k.x, k.g, st.h, out1, k.K, k.N, s));
            CHECK(cudaStreamSynchronize(s));
            CHECK(cudaMemcpy(c.data(), out1, n * 2, cudaMemcpyDeviceToHost));
            CHECK(gemv(k.f, many, k.w, k.x, k.g, st.h, out1, k.K, k.N, s));
            CHECK(cudaStreamSynchronize(s));
            CHECK(cudaMemcpy(d.data(), out1, n * 2, cudaMemcpyDeviceToHost));
            int diff = 0;
            for (size_t i = 0; i < n; ++i)
                diff += std::memcmp(&c[i], &d[i], 2) != 0;
            bad += diff != 0;
            std::printf("check GEMV %-28s %s: %d of %zu outputs differ %s\n", k.name,
                unroll ? (std::to_string(unroll) + " loads/lane").c_str() : "x directly  ", diff, n, diff ? "FAIL" : "ok");
        }
    (void) y2;
    // The rotary epilogue against the q/k/v GEMV then the rotary kernel: the same bits.
    {
        GemvLaunch l;
        l.pdl = pdl_enabled();
        Folds const f{kRmsNormFolded, EPS, kPlain};
        CHECK(gemv(f, l, blk.wqkv, st.h, nullptr, nullptr, st.qkv, H, 3 * H, s));
        void const* in[3] = {st.qkv, st.cos, st.sin};
        void* out[3] = {st.q, st.k, st.v};
        CHECK(launch_rotary<__half, __half>(in, out, true, 1, 1, NH, NKV, HD, 1.f / std::sqrt(float(HD)), s));
        CHECK(cudaStreamSynchronize(s));
        __half* const qkv[3] = {st.q, st.k, st.v}; // NH = NKV: H values each
        std::vector<__half> want(3 * H), got(3 * H);
        for (int i = 0; i < 3; ++i)
        {
            CHECK(cudaMemcpy(want.data() + i * H, qkv[i], H * 2, cudaMemcpyDeviceToHost));
            CHECK(cudaMemset(qkv[i], 0, H * 2));
        }
        l.rope = st.rope();
        CHECK(gemv(Folds{kRmsNormFolded, EPS, kRope}, l, blk.wqkv, st.h, nullptr, nullptr, nullptr, H, 3 * H, s));
        CHECK(cudaStreamSynchronize(s));
        for (int i = 0; i < 3; ++i)
            CHECK(cudaMemcpy(got.data() + i * H, qkv[i], H * 2, cudaMemcpyDeviceToHost));
        int diff = 0;
        for (int i = 0; i < 3 * H; ++i)
            diff += std::memcmp(&want[i], &got[i], 2) != 0;
        bad += diff != 0;
        std::printf("check q/k/v GEMV with the rotary epilogue against GEMV + rotary kernel: %d of %d differ %s\n", diff,
            3 * H, diff ? "FAIL" : "ok");
    }
    return bad;
}

int main(int argc, char** argv)
{
    bool const do_check = argc > 1 && std::strcmp(argv[1], "--check") == 0;
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    Step st;
    CHECK(cudaDeviceGetAttribute(&st.sms, cudaDevAttrMultiProcessorCount, 0));
    uint32_t seed = 1;
    float const ws = 0.03f; // weights ~U(-0.015, 0.015): activations stay O(1) over 32 blocks
    for (int i = 0; i < LAYERS; ++i)
    {
        Block b;
        b.wqkv = alloc(size_t(3) * H * H, seed++, ws);
        b.wo = alloc(size_t(H) * H, seed++, ws);
        b.wgu = alloc(size_t(2) * I * H, seed++, ws);
        b.wd = alloc(size_t(H) * I, seed++, ws);
        b.g1 = alloc(H, seed++, 0.2f);
        b.g2 = alloc(H, seed++, 0.2f);
        b.kc = alloc(size_t(NKV) * MAXSEQ * HD, seed++, 2.f);
        b.vc = alloc(size_t(NKV) * MAXSEQ * HD, seed++, 2.f);
        st.blocks.push_back(b);
    }
    st.head = alloc(size_t(V) * H, seed++, ws);
    st.gf = alloc(H, seed++, 0.2f);
    st.h = alloc(H, seed++, 2.f);
    st.h2 = alloc(H, seed++, 0.f);
    st.qkv = alloc(3 * H, seed++, 2.f);
    st.q = alloc(NH * HD, seed++, 0.5f);
    st.k = alloc(NKV * HD, seed++, 2.f);
    st.v = alloc(NKV * HD, seed++, 2.f);
    st.attn = alloc(NH * HD, seed++, 0.f);
    st.gu = alloc(2 * I, seed++, 0.f);
    st.logits = alloc(V, seed++, 0.f);
    st.cos = alloc(HD, seed++, 2.f);
    st.sin = alloc(HD, seed++, 2.f);
    CHECK(cudaMalloc(&st.write, sizeof(int32_t)));
    CHECK(cudaMalloc(&st.mask, MAXSEQ * sizeof(int32_t)));
    fill_int<<<(MAXSEQ + 255) / 256, 256>>>(st.mask, MAXSEQ, 1);
    AttnParams big{};
    big.B = 1, big.nh = NH, big.nkv = NKV, big.M = MAXSEQ, big.hd = HD, big.group = 1;
    size_t const split_bytes = decode_split_bytes(big, kMaxDecodeSplits, st.sms);
    CHECK(cudaMalloc(&st.split_buf, split_bytes));
    CHECK(cudaMemset(st.split_buf, 0, split_bytes));
    CHECK(cudaDeviceSynchronize());
    double const gb = (LAYERS * (3.0 * H * H + H * H + 2.0 * I * H + double(H) * I) + double(V) * H) * 2 / 1e9;
    int l2 = 0;
    CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    std::printf("llama-7b batch-1 decode step: %.2f GB of weights, floor %.3f ms at 4.8 TB/s; %d SMs, L2 %.1f MB, PDL %s\n",
        gb, gb / 4.8, st.sms, l2 / 1e6, pdl_enabled() ? "on" : "off");

    if (do_check)
        return check(st, s) ? 1 : 0;

    std::vector<Config> configs;
    auto add = [&](std::string name, auto edit) {
        Config c;
        c.name = name;
        edit(c);
        configs.push_back(c);
    };
    auto shipped = [](Config& c) {
        c.swiglu_epilogue = true, c.norm_in_w = true, c.attn_prefetch = 0, c.direct_x = false;
    };
    auto now = [](Config& c) { c.swiglu_epilogue = true, c.norm_in_w = true; };
    add("x staged, no attention prefetch", shipped);
    add("now: x directly, attention prefetch", now);
    add("  now + rotary in the q/k/v GEMV", [&](Config& c) { now(c), c.rope_gemv = true; });
    add("  now, no rotary", [&](Config& c) { now(c), c.rotary = false; });
    add("  now, attention a stub", [&](Config& c) { now(c), c.attention_stub = true; });
    add("  now, no attention", [&](Config& c) { now(c), c.attention = false; });
    add("now again", now);
    add("now + rotary in the q/k/v GEMV again", [&](Config& c) { now(c), c.rope_gemv = true; });
    for (int ctx : {12, 76, 140, 525})
    {
        set_context(st, ctx);
        for (Config const& c : configs)
        {
            float const ms = time_step(st, c, s);
            std::printf("ctx %3d  %-40s %7.3f ms/step  %5.2f TB/s of weights\n", ctx, c.name.c_str(), ms,
                c.gemv ? gb / ms : 0.0);
        }
    }
    return 0;
}

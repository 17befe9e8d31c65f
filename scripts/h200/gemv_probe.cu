// Probe: can a plain batch-1 GEMV beat cuBLAS at streaming a decode step's weights? (not part of the toolkit)
// y[n] = sum_k w[n][k] x[k], fp16 weights stored (out x in) = PyTorch's nn.Linear layout, float accumulation.
// One warp per ROWS output rows, 16-byte streaming loads of w, x staged in shared memory, warp-shuffle reduce.
// Times llama-7b's fused step (per block: qkv 4096x12288, o 4096x4096, gate_up 4096x22016, down 11008x4096; 32
// blocks; then the LM head 4096x32000), every multiply with its own weights (no L2 reuse), launched back to back.
// Build and run: nvcc -O3 -arch=sm_90 -o /tmp/gemv_probe scripts/h200/gemv_probe.cu && /tmp/gemv_probe
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

template <int ROWS, int UNROLL>
__global__ void gemv(half const* __restrict__ w, half const* __restrict__ x, half* __restrict__ y, int K, int N)
{
    extern __shared__ uint4 xs[];
    int const kv = K / 8; // 16-byte vectors per row
    for (int i = threadIdx.x; i < kv; i += blockDim.x)
        xs[i] = reinterpret_cast<uint4 const*>(x)[i];
    __syncthreads();
    int const lane = threadIdx.x & 31, warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int const row0 = warp * ROWS;
    if (row0 >= N)
        return;
    float acc[ROWS] = {};
    uint4 const* wr[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
        wr[r] = reinterpret_cast<uint4 const*>(w) + size_t(min(row0 + r, N - 1)) * kv;
    for (int base = lane; base < kv; base += 32 * UNROLL)
    {
        uint4 wv[ROWS][UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
                wv[r][u] = base + u * 32 < kv ? __ldcs(wr[r] + base + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)
        {
            if (base + u * 32 >= kv)
                break;
            uint4 const xv = xs[base + u * 32];
            half2 const* xh = reinterpret_cast<half2 const*>(&xv);
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
            {
                half2 const* wh = reinterpret_cast<half2 const*>(&wv[r][u]);
#pragma unroll
                for (int j = 0; j < 4; ++j)
                {
                    float2 const a = __half22float2(wh[j]), b = __half22float2(xh[j]);
                    acc[r] += a.x * b.x + a.y * b.y;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
    {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
        if (lane == 0 && row0 + r < N)
            y[row0 + r] = __float2half(acc[r]);
    }
}

struct Mul { int K, N; half* w; };

template <int ROWS, int UNROLL>
void launch(Mul const& m, half const* x, half* y, cudaStream_t s)
{
    int const threads = 256, rows_per_block = threads / 32 * ROWS;
    gemv<ROWS, UNROLL><<<(m.N + rows_per_block - 1) / rows_per_block, threads, m.K * 2, s>>>(m.w, x, y, m.K, m.N);
}

template <int ROWS, int UNROLL>
int time_step(std::vector<Mul> const& step, half const* x, half* y, double gb)
{
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (auto const& m : step)
        launch<ROWS, UNROLL>(m, x, y, s);
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 3; ++i)
        CHECK(cudaGraphLaunch(ge, s));
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    int const reps = 20;
    cudaEventRecord(a, s);
    for (int i = 0; i < reps; ++i)
        CHECK(cudaGraphLaunch(ge, s));
    cudaEventRecord(b, s);
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    ms /= reps;
    printf("ROWS=%d UNROLL=%d: %.3f ms per step, %.2f TB/s\n", ROWS, UNROLL, ms, gb / ms);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
    return 0;
}

// one shape alone: distinct weight copies cycled so nothing is served from L2
template <int ROWS, int UNROLL>
int time_shape(int K, int N, half const* x, half* y)
{
    size_t const bytes = size_t(K) * N * 2;
    int const copies = int((size_t(1) << 30) / bytes) + 1;
    std::vector<Mul> step;
    half* pool;
    CHECK(cudaMalloc(&pool, bytes * copies));
    cudaMemset(pool, 0x11, bytes * copies);
    for (int c = 0; c < copies; ++c)
        step.push_back({K, N, pool + size_t(c) * K * N});
    printf("  %5d x %5d (x%d): ", K, N, copies);
    int rc = time_step<ROWS, UNROLL>(step, x, y, double(bytes) * copies / 1e9 / 1.0);
    cudaFree(pool);
    return rc;
}

int main()
{
    std::vector<Mul> step;
    double bytes = 0;
    auto add = [&](int K, int N) {
        half* w;
        if (cudaMalloc(&w, size_t(K) * N * 2) != cudaSuccess)
            return false;
        cudaMemset(w, 0x11, size_t(K) * N * 2);
        step.push_back({K, N, w});
        bytes += double(K) * N * 2;
        return true;
    };
    for (int b = 0; b < 32; ++b)
        if (!add(4096, 12288) || !add(4096, 4096) || !add(4096, 22016) || !add(11008, 4096))
            return 1;
    add(4096, 32000);
    half *x, *y;
    CHECK(cudaMalloc(&x, 11008 * 2));
    CHECK(cudaMalloc(&y, 32000 * 2));
    cudaMemset(x, 0x22, 11008 * 2);
    double const gb = bytes / 1e9;
    printf("llama-7b fused step: %zu multiplies, %.2f GB, floor %.3f ms at 4.8 TB/s\n", step.size(), gb, gb / 4.8);
    int rc = 0;
    rc |= time_step<1, 4>(step, x, y, gb);
    rc |= time_step<1, 8>(step, x, y, gb);
    rc |= time_step<2, 4>(step, x, y, gb);
    rc |= time_step<2, 8>(step, x, y, gb);
    rc |= time_step<4, 2>(step, x, y, gb);
    rc |= time_step<4, 4>(step, x, y, gb);
    for (auto const& m : step)
        cudaFree(m.w);
    printf("shapes alone (ROWS=2 UNROLL=4):\n");
    int const shapes[][2] = {{4096, 4096}, {4096, 12288}, {4096, 22016}, {11008, 4096}, {4096, 11008}, {4096, 7156},
        {4096, 32000}}; // K must be a multiple of 8 (7156 x 4096 is not)
    for (auto const& sh : shapes)
        rc |= time_shape<2, 4>(sh[0], sh[1], x, y);
    return rc;
}

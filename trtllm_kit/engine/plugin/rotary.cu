// TrtllmKitRotary: one decoder layer's rotary position embedding (RoPE) of the queries and the new keys as one
// kernel, a TensorRT IPluginV2DynamicExt that builds against the TensorRT 8.6 and 10.x headers.
//
// Inputs (linear layout; T = half or float, bf16 where TensorRT has it; C = any of those):
//   0 q_lin  T  (B, S, nh * hd)   the q projection's output
//   1 k_lin  T  (B, S, nkv * hd)  the k projection's output
//   2 cos    C  (B, 1, S, hd)     per position, rank 4, B * S * hd values (checked at enqueue)
//   3 sin    C  (B, 1, S, hd)
// Outputs:
//   0 q      T  (B, nh, S, hd)    rotated, then multiplied by scale (1/sqrt(hd) in the export)
//   1 k      T  (B, nkv, S, hd)   rotated
// Fields: num_heads, num_kv_heads, head_dim (int32), scale (float32), fused_qkv (int32, 0 when absent; serialized
// as 20 bytes, engines from before it 16).
// With fused_qkv 1 the projections come as one tensor and v is split off too (the slices and v's transpose were
// three copy kernels per block; H200, llama-7b at batch 1, eighth session):
//   0 qkv    T  (B, S, (nh + 2 nkv) * hd)   [q | k | v], the fused q/k/v multiply's output
//   1 cos, 2 sin                            as above
//   outputs q, k as above, and 2 v T (B, nkv, S, hd), not rotated
//
// As transformers' apply_rotary_pos_emb, with every intermediate rounded to T as eager stores it:
//   y = T(T(x * cos) + T(rotate_half(x) * sin)), rotate_half(x) = concat(-x[hd/2:], x[:hd/2]); q = T(y * T(scale)).
// Why: the export's rotary is Reshape, Transpose, Split, Neg, Concat, Mul, Mul, Add (and a Mul by the scale for
// q); TensorRT 8.6 at optimization level 0 (the plugin layout) runs it as about 7 kernels per block (H200,
// llama-7b: ~1.0 of 8.0 ms per decode step profiled at batch 1). A grid of (batch row x position) x chunks, one
// element pair of one head per thread; no allocation, no synchronisation: capturable in a CUDA graph.

#pragma nv_diag_suppress 1444
#pragma nv_diag_suppress 1215
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 997

#include "plugin_common.cuh"
#include "rotary_kernel.cuh"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace
{

using trtllm_kit::float_type;

constexpr char const* kRopeName = "TrtllmKitRotary";
constexpr char const* kRopeVersion = "1";
using trtllm_kit::kRopeThreads;
using trtllm_kit::row_pairs;

struct RopeFields
{
    int32_t num_heads;
    int32_t num_kv_heads;
    int32_t head_dim;
    float scale;
    int32_t fused_qkv; // serialized from the fifth field on: engines from before it have 16 bytes (0)
};
constexpr size_t kOldFieldBytes = 16;
static_assert(sizeof(RopeFields) == 20, "RopeFields is serialized as 20 bytes");

class RotaryPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit RotaryPlugin(RopeFields f)
        : mF(f)
    {
    }

    // IPluginV2
    char const* getPluginType() const noexcept override { return kRopeName; }
    char const* getPluginVersion() const noexcept override { return kRopeVersion; }
    int32_t getNbOutputs() const noexcept override { return mF.fused_qkv ? 3 : 2; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    size_t getSerializationSize() const noexcept override { return sizeof(RopeFields); }
    void serialize(void* buffer) const noexcept override { std::memcpy(buffer, &mF, sizeof(RopeFields)); }
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
        auto* p = new (std::nothrow) RotaryPlugin(mF);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
        int32_t /*nbInputs*/, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        nvinfer1::DimsExprs out;
        out.nbDims = 4;
        out.d[0] = inputs[0].d[0];
        out.d[1] = exprBuilder.constant(outputIndex == 0 ? mF.num_heads : mF.num_kv_heads); // k and v: nkv
        out.d[2] = inputs[0].d[1];
        out.d[3] = exprBuilder.constant(mF.head_dim);
        return out;
    }

    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != inputs() || nbOutputs != getNbOutputs() || pos < 0 || pos >= nbInputs + nbOutputs)
            return false;
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR)
            return false;
        int const table = tableIndex();
        if (pos == 0)
            return float_type(d.type);
        if (pos == table)
            return float_type(d.type); // the tables in whatever float type they come (8.6 widens constants)
        if (pos == table + 1)
            return d.type == inOut[table].type;
        return d.type == inOut[0].type; // k_lin and the outputs: q's type
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        mConfigError.clear();
        auto last = [](nvinfer1::Dims const& d) { return d.nbDims > 0 ? d.d[d.nbDims - 1] : int64_t(-2); };
        int const t = tableIndex();
        if (nbInputs != inputs() || nbOutputs != getNbOutputs())
            mConfigError = mF.fused_qkv ? "expected 3 inputs (qkv, cos, sin) and 3 outputs" : "expected 4 inputs and 2 outputs";
        else if (mF.head_dim <= 0 || mF.head_dim % 2 || mF.num_heads <= 0 || mF.num_kv_heads <= 0)
            mConfigError = "head_dim must be even and > 0, num_heads and num_kv_heads > 0";
        else if (in[0].desc.dims.nbDims != 3 || (!mF.fused_qkv && in[1].desc.dims.nbDims != 3))
            mConfigError = mF.fused_qkv ? "qkv must be (batch, seq, (num_heads + 2 num_kv_heads) * head_dim)"
                                        : "q and k must be (batch, seq, heads * head_dim)";
        else if (in[t].desc.dims.nbDims != 4 || in[t + 1].desc.dims.nbDims != 4)
            mConfigError = "cos and sin must be (batch, 1, seq, head_dim)";
        else
        {
            int64_t const q = last(in[0].desc.dims), k = mF.fused_qkv ? -1 : last(in[1].desc.dims),
                          c = last(in[t].desc.dims), s = last(in[t + 1].desc.dims);
            int64_t const q_want = int64_t(mF.num_heads + (mF.fused_qkv ? 2 * mF.num_kv_heads : 0)) * mF.head_dim;
            if (q >= 0 && q != q_want)
                mConfigError = std::string(mF.fused_qkv ? "qkv" : "q") + "'s last axis is " + std::to_string(q) + ", not "
                    + std::to_string(q_want) + (mF.fused_qkv ? " ((num_heads + 2 num_kv_heads) * head_dim)" : " (num_heads * head_dim)");
            else if (k >= 0 && k != int64_t(mF.num_kv_heads) * mF.head_dim)
                mConfigError = "k's last axis is " + std::to_string(k) + ", not num_kv_heads * head_dim";
            else if ((c >= 0 && c != mF.head_dim) || (s >= 0 && s != mF.head_dim))
                mConfigError = "cos and sin must end in head_dim (" + std::to_string(mF.head_dim) + ")";
        }
        if (!mConfigError.empty())
            trtllm_kit::plugin_error(kRopeName, "%s", mConfigError.c_str());
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
            trtllm_kit::plugin_error(kRopeName, "%s", mConfigError.c_str());
            return 1;
        }
        int64_t const B = inputDesc[0].dims.d[0], S = inputDesc[0].dims.d[1];
        int64_t const rows = B * S;
        if (rows == 0)
            return 0;
        // the tables are read as one row per (batch, position): a feed whose position_ids do not match input_ids'
        // batch and length (which the exported ops would broadcast) must not be read past their end
        int32_t const first = tableIndex();
        for (int32_t t = first; t <= first + 1; ++t)
        {
            int64_t const values = trtllm_kit::volume(inputDesc[t].dims);
            if (values != rows * mF.head_dim || inputDesc[t].dims.d[0] != B || inputDesc[t].dims.d[2] != S)
            {
                trtllm_kit::plugin_error(kRopeName, "%s holds %lld values, not batch x seq x head_dim = %lld "
                    "(position_ids must have input_ids' shape)", t == first ? "cos" : "sin", (long long) values,
                    (long long) (rows * mF.head_dim));
                return 1;
            }
        }
        bool const fused = mF.fused_qkv != 0;
        int64_t const chunks = (row_pairs(mF.num_heads, mF.num_kv_heads, mF.head_dim, fused) + kRopeThreads - 1) / kRopeThreads;
        if (rows > 0x7fffffff || S > 0x7fffffff || chunks > 65535)
        {
            trtllm_kit::plugin_error(kRopeName, "%lld rows of %lld blocks exceed the grid", (long long) rows,
                (long long) chunks);
            return 1;
        }
        cudaError_t const e = trtllm_kit::launch_rotary_as(inputDesc[0].type, inputDesc[first].type, inputs, outputs,
            fused, rows, static_cast<int>(S), mF.num_heads, mF.num_kv_heads, mF.head_dim, mF.scale, stream);
        if (e != cudaSuccess)
        {
            trtllm_kit::plugin_error(kRopeName, "kernel launch failed (rows=%lld): %s", (long long) rows,
                cudaGetErrorString(e));
            return 1;
        }
        return 0;
    }

private:
    int32_t inputs() const { return mF.fused_qkv ? 3 : 4; }
    int32_t tableIndex() const { return mF.fused_qkv ? 1 : 2; } // cos's input; sin's follows it

    RopeFields mF;
    std::string mNamespace;
    std::string mConfigError;
};

class RotaryCreator final : public nvinfer1::IPluginCreator
{
public:
    RotaryCreator()
    {
        for (char const* f : {"num_heads", "num_kv_heads", "head_dim"})
            mFields.emplace_back(f, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFields.emplace_back("scale", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
        mFields.emplace_back("fused_qkv", nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        mFieldCollection.nbFields = int32_t(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kRopeName; }
    char const* getPluginVersion() const noexcept override { return kRopeVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        RopeFields f{-1, -1, -1, 0.f, 0};
        bool scaled = false;
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& p = fc->fields[i];
            if (!p.name || !p.data || p.length < 1)
                continue;
            if (p.type == nvinfer1::PluginFieldType::kINT32)
            {
                int32_t const v = *static_cast<int32_t const*>(p.data);
                if (std::strcmp(p.name, "num_heads") == 0)
                    f.num_heads = v;
                else if (std::strcmp(p.name, "num_kv_heads") == 0)
                    f.num_kv_heads = v;
                else if (std::strcmp(p.name, "head_dim") == 0)
                    f.head_dim = v;
                else if (std::strcmp(p.name, "fused_qkv") == 0)
                    f.fused_qkv = v;
            }
            else if (p.type == nvinfer1::PluginFieldType::kFLOAT32 && std::strcmp(p.name, "scale") == 0)
            {
                f.scale = *static_cast<float const*>(p.data);
                scaled = true;
            }
        }
        if (!scaled)
        {
            trtllm_kit::plugin_error(kRopeName, "%s: field scale is required", name ? name : "");
            return nullptr;
        }
        return checked(name, f);
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override
    {
        if (!data || (length != sizeof(RopeFields) && length != kOldFieldBytes))
        {
            trtllm_kit::plugin_error(kRopeName, "%s: serialized plugin has %zu bytes, expected %zu (or %zu)",
                name ? name : "", length, sizeof(RopeFields), kOldFieldBytes);
            return nullptr;
        }
        RopeFields f{-1, -1, -1, 0.f, 0};
        std::memcpy(&f, data, length);
        return checked(name, f);
    }

    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

private:
    // A plugin for valid fields (from the network or a serialized engine), else one error line and null.
    nvinfer1::IPluginV2* checked(char const* name, RopeFields f) const noexcept
    {
        if (f.num_heads <= 0 || f.num_kv_heads <= 0 || f.head_dim <= 0 || f.head_dim % 2
            || (f.fused_qkv != 0 && f.fused_qkv != 1))
        {
            trtllm_kit::plugin_error(kRopeName,
                "%s: num_heads %d, num_kv_heads %d (both > 0), head_dim %d (even, > 0), fused_qkv %d (0 or 1)",
                name ? name : "", int(f.num_heads), int(f.num_kv_heads), int(f.head_dim), int(f.fused_qkv));
            return nullptr;
        }
        return make(f);
    }

    nvinfer1::IPluginV2* make(RopeFields f) const noexcept
    {
        auto* p = new (std::nothrow) RotaryPlugin(f);
        if (p)
            p->setPluginNamespace(mNamespace.c_str());
        return p;
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mNamespace;
};

} // namespace

REGISTER_TENSORRT_PLUGIN(RotaryCreator);

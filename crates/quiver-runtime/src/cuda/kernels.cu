// Quiver's own CUDA kernels: everything of an encoder layer but its matrix products (those run
// on cuBLAS). NVRTC compiles this file at run time (`kernels.rs`), so a build needs no CUDA
// toolkit. Each kernel's arithmetic is mirrored on the CPU by `src/gpu_reference.rs`, whose
// tests check it against the CPU layers that hold parity with `transformers`.
//
// Layout, as on the CPU: a batch is packed, every token of every sequence one row, and
// `seq_starts[s]..seq_starts[s + 1]` are sequence s's rows; nothing is padded. Activations
// between kernels are f32. `T` is the format the matrix products read (weights, and the copy
// of an activation that feeds one): float at f32, bf16 at bf16. Each kernel is
// instantiated for both, named `<kernel>_f32` and `<kernel>_bf16`.

// bf16 as its bits, with the conversions written out, so that NVRTC needs no header from a
// CUDA toolkit (`cuda_bf16.h` is not one of its built-ins) and the CPU reference rounds the same
// way (`half::bf16::from_f32`: to nearest, ties to even).
struct bf16 {
    unsigned short bits;
};

#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float((unsigned)x.bits << 16); }

template <typename T> __device__ __forceinline__ T narrow(float x);
template <> __device__ __forceinline__ float narrow<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 narrow<bf16>(float x) {
    const unsigned u = __float_as_uint(x);
    bf16 out;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        out.bits = (unsigned short)((u >> 16) | 0x40u);  // NaN stays NaN (quiet)
    } else {
        out.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return out;
}

// Butterfly sum and maximum over a warp: every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over a block (a multiple of 32 threads, at most 1024), returned to every thread.
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // `partial` may still be read by the previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// Embeddings, one block per token: `scale` · words[id] + positions[position] + types[type];
// a table that is null is left out (`scale` is √hidden for Gemma, 1 for the rest).
template <typename T>
__device__ void embed(float* out, const T* words, const T* positions, const T* types,
                      const unsigned* ids, const unsigned* position_ids, const unsigned* type_ids,
                      int hidden, float scale) {
    const long token = blockIdx.x;
    const T* word = words + (long)ids[token] * hidden;
    const T* position = positions ? positions + (long)position_ids[token] * hidden : nullptr;
    const T* type = types ? types + (long)(type_ids ? type_ids[token] : 0) * hidden : nullptr;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float v = to_f32(word[c]) * scale;
        if (position) v += to_f32(position[c]);
        if (type) v += to_f32(type[c]);
        out[token * hidden + c] = v;
    }
}

// Layer or RMS norm of `x + residual` (residual may be null), one block per row. The sum is
// written to `sum` when not null (a pre-norm layer's residual stream), the normalised row to
// `out` (f32) and `out_narrow` (the next product's input), each when not null. Each thread
// reads and writes only its own columns, so `sum` and `out` may be `x`. Mean and variance take
// two passes, as the CPU does, not the one-pass E[x²] − E[x]² that cancels on large values.
template <typename T, bool RMS>
__device__ void norm(const float* x, const float* residual, const T* gamma, const T* beta,
                     float* sum, float* out, T* out_narrow, int cols, float eps) {
    const long base = (long)blockIdx.x * cols;
    float mean = 0.0f;
    if (!RMS) {
        float total = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            total += x[base + c] + (residual ? residual[base + c] : 0.0f);
        mean = block_sum(total) / cols;
    }
    float squares = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = x[base + c] + (residual ? residual[base + c] : 0.0f) - mean;
        squares += d * d;
    }
    const float inverse = rsqrtf(block_sum(squares) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = x[base + c] + (residual ? residual[base + c] : 0.0f);
        const float y = (v - mean) * inverse * to_f32(gamma[c]) + (beta ? to_f32(beta[c]) : 0.0f);
        if (sum) sum[base + c] = v;
        if (out) out[base + c] = y;
        if (out_narrow) out_narrow[base + c] = narrow<T>(y);
    }
}

// RMS norm of each query and key head of a fused `[tokens, row]` Q, K, V buffer, in place
// (Qwen3, Gemma 3): one warp per (token, head), heads `q_heads` query heads then `kv_heads`
// key heads.
template <typename T>
__device__ void head_rms_norm(float* qkv, const T* q_weight, const T* k_weight, int q_heads,
                              int kv_heads, int head_dim, int row, long tokens, float eps) {
    const long warp = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    const long heads = q_heads + kv_heads;
    if (warp >= tokens * heads) return;
    const long token = warp / heads;
    const int head = (int)(warp % heads);
    const T* weight = head < q_heads ? q_weight : k_weight;
    float* v = qkv + token * row + (long)head * head_dim;
    float squares = 0.0f;
    for (int c = lane; c < head_dim; c += 32) squares += v[c] * v[c];
    const float inverse = rsqrtf(warp_sum(squares) / head_dim + eps);
    for (int c = lane; c < head_dim; c += 32) v[c] = v[c] * inverse * to_f32(weight[c]);
}

// Activations by the number `ACTIVATION` of `kernels.rs`: 0 none, 1 GELU (erf), 2 GELU (tanh),
// 3 ReLU, 4 SiLU. Full-precision erff, tanhf and expf: the CPU's fast forms agree to within
// f32 rounding, and NVRTC is never given --use_fast_math.
__device__ __forceinline__ float activate(float x, int activation) {
    switch (activation) {
        case 1: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
        case 2: return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
        case 3: return fmaxf(x, 0.0f);
        case 4: return x / (1.0f + expf(-x));
        default: return x;
    }
}

// `act(x + bias)` over a `[rows, cols]` f32 matrix (bias may be null), written to `out` and
// `out_narrow` when not null; `out` may be `x`.
template <typename T>
__device__ void bias_activation(const float* x, const T* bias, float* out, T* out_narrow,
                                long rows, int cols, int activation) {
    const long n = rows * cols;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const float y = activate(x[i] + (bias ? to_f32(bias[i % cols]) : 0.0f), activation);
        if (out) out[i] = y;
        if (out_narrow) out_narrow[i] = narrow<T>(y);
    }
}

// A gated linear unit over `[rows, 2 · width]`, each row the gate then the other projection
// (plus `bias`, 2 · width long, when not null): `out[r, j] = act(gate) · other`, the next
// product's input. SwiGLU with SiLU, GeGLU with a GELU.
template <typename T>
__device__ void gated_activation(const float* gate_up, const T* bias, T* out, long rows,
                                 int width, int activation) {
    const long n = rows * width;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const long r = i / width;
        const int j = (int)(i % width);
        float gate = gate_up[r * 2 * width + j];
        float other = gate_up[r * 2 * width + width + j];
        if (bias) {
            gate += to_f32(bias[j]);
            other += to_f32(bias[width + j]);
        }
        out[i] = narrow<T>(activate(gate, activation) * other);
    }
}

// Rotary position embeddings in the "rotate half" layout (dimension i pairs with
// i + head_dim / 2), in place on the query and key heads, the first `rotated_heads` of each
// `row`-wide token. One thread per (token, head, pair). The angle is position · frequency in
// f32, with the frequencies the host computed as the CPU does.
extern "C" __global__ void rotary(float* qkv, const unsigned* positions, const float* inverse_frequencies,
                       long tokens, int rotated_heads, int head_dim, int row) {
    const int half = head_dim / 2;
    const long n = tokens * rotated_heads * half;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int pair = (int)(i % half);
        const long head = (i / half) % rotated_heads;
        const long token = i / ((long)half * rotated_heads);
        float sine, cosine;
        sincosf((float)positions[token] * inverse_frequencies[pair], &sine, &cosine);
        float* h = qkv + token * row + head * head_dim;
        const float a = h[pair], b = h[pair + half];
        h[pair] = a * cosine - b * sine;
        h[pair + half] = b * cosine + a * sine;
    }
}

// Which keys a query sees, as `Visibility` on the CPU: 0 all of its sequence, 1 itself and
// those before it, 2 those at most `window` positions away.
__device__ __forceinline__ void visible_keys(int visibility, int window, int query, int len,
                                             int* first, int* end) {
    *first = 0;
    *end = len;
    if (visibility == 1) *end = query + 1;
    if (visibility == 2) {
        *first = max(query - window, 0);
        *end = min(query + window + 1, len);
    }
}

#define QUERIES_PER_BLOCK 8
#define MAX_HEAD_DIM 256

// Self-attention over a packed batch with no padding, memory linear in sequence length: each
// block takes QUERIES_PER_BLOCK consecutive queries of one sequence (`tile_seq`, `tile_first`:
// one entry per block, built by the host) and one head, one warp per query, and walks the keys
// those queries see in tiles of `key_tile` (32 for head_dim ≤ 128, else 16) held in shared
// memory, keeping a running maximum, sum and output per query: the online softmax of
// FlashAttention, so no score matrix is ever stored.
//
// Q, K, V sit side by side in `qkv` rows of (heads + 2 · kv_heads) · head_dim; a key/value head
// serves heads / kv_heads query heads. `bias`, when not null, is the relative-position table of
// `RelativePositionBias`: `[heads][2 · bias_span − 1]`, offset i − j at index i − j + span − 1.
// The output is `[tokens, heads · head_dim]` in the next product's format. Dynamic shared
// memory: key_tile · (2 · head_dim + 1) floats (each key row padded by one, so that the 32
// lanes scoring 32 keys read 32 different banks).
template <typename T>
__device__ void attention(const float* qkv, T* out, const int* seq_starts, const int* tile_seq,
                          const int* tile_first, int heads, int kv_heads, int head_dim,
                          int key_tile, float scale, int visibility, int window,
                          const float* bias, int bias_span) {
    extern __shared__ float tiles[];
    float* keys = tiles;
    const int key_stride = head_dim + 1;
    float* values = tiles + key_tile * key_stride;
    __shared__ float queries[QUERIES_PER_BLOCK][MAX_HEAD_DIM];

    const int seq = tile_seq[blockIdx.x], first_query = tile_first[blockIdx.x];
    const int head = blockIdx.y, kv_head = head / (heads / kv_heads);
    const int start = seq_starts[seq], len = seq_starts[seq + 1] - start;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int query = first_query + warp;
    const bool active = query < len;
    const long row = (long)(heads + 2 * kv_heads) * head_dim;
    const long key_column = (long)heads * head_dim + (long)kv_head * head_dim;
    const long value_column = key_column + (long)kv_heads * head_dim;

    if (active)
        for (int c = lane; c < head_dim; c += 32)
            queries[warp][c] = qkv[(start + query) * row + (long)head * head_dim + c];

    // The span of keys any query of this block sees.
    int block_first, block_end, unused;
    visible_keys(visibility, window, first_query, len, &block_first, &unused);
    visible_keys(visibility, window, min(first_query + QUERIES_PER_BLOCK, len) - 1, len, &unused,
                 &block_end);
    int my_first = 0, my_end = 0;
    if (active) visible_keys(visibility, window, query, len, &my_first, &my_end);

    const float* head_bias = bias ? bias + (long)head * (2 * bias_span - 1) : nullptr;
    float running_max = NEG_INF, running_sum = 0.0f;
    float output[MAX_HEAD_DIM / 32];
    for (int e = 0; e < MAX_HEAD_DIM / 32; ++e) output[e] = 0.0f;

    for (int tile = block_first; tile < block_end; tile += key_tile) {
        const int in_tile = min(key_tile, block_end - tile);
        __syncthreads();  // the previous tile is no longer read
        for (int i = threadIdx.x; i < in_tile * head_dim; i += blockDim.x) {
            const long token = start + tile + i / head_dim;
            const int c = i % head_dim;
            keys[(i / head_dim) * key_stride + c] = qkv[token * row + key_column + c];
            values[i] = qkv[token * row + value_column + c];
        }
        __syncthreads();
        if (!active) continue;

        // Lane j scores key tile + j.
        float score = NEG_INF;
        const int key = tile + lane;
        if (lane < in_tile && key >= my_first && key < my_end) {
            float dot = 0.0f;
            for (int c = 0; c < head_dim; ++c) dot += queries[warp][c] * keys[lane * key_stride + c];
            score = dot * scale;
            if (head_bias) score += head_bias[query - key + bias_span - 1];
        }
        const float tile_max = warp_max(score);
        if (tile_max == NEG_INF) continue;  // no key of this tile is visible to this query
        const float new_max = fmaxf(running_max, tile_max);
        const float rescale = expf(running_max - new_max);  // 0 on the first visible tile
        const float weight = score == NEG_INF ? 0.0f : expf(score - new_max);
        running_sum = running_sum * rescale + warp_sum(weight);
        for (int e = 0; e < MAX_HEAD_DIM / 32; ++e) output[e] *= rescale;
        for (int j = 0; j < in_tile; ++j) {
            const float w = __shfl_sync(0xffffffffu, weight, j);
            for (int e = 0; e < MAX_HEAD_DIM / 32; ++e) {
                const int c = lane + 32 * e;
                if (c < head_dim) output[e] += w * values[j * head_dim + c];
            }
        }
        running_max = new_max;
    }
    if (!active) return;
    T* destination = out + (long)(start + query) * heads * head_dim + (long)head * head_dim;
    for (int e = 0; e < MAX_HEAD_DIM / 32; ++e) {
        const int c = lane + 32 * e;
        if (c < head_dim) destination[c] = narrow<T>(output[e] / running_sum);
    }
}

// Pooling, one thread per (sequence, column), as `Pooling::pool`: by the number `POOLING` of
// `kernels.rs`, 0 the first token, 1 the mean, 2 the maximum, 3 the sum over √count, 4 the
// last token, 5 SPLADE (log(1 + max(0, x)) of the maximum). `skip[s]` leading tokens of
// sequence s (a prompt) stay out of 1, 2, 3 and 5, though never the whole sequence. Tokens
// are summed in order, as on the CPU.
extern "C" __global__ void pool(const float* hidden, float* out, const int* seq_starts, const int* skip,
                     int sequences, int hidden_size, int pooling) {
    const int seq = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (seq >= sequences || c >= hidden_size) return;
    const int start = seq_starts[seq], end = seq_starts[seq + 1];
    const int kept = min(start + (skip ? skip[seq] : 0), end - 1);
    float result;
    if (pooling == 0) {
        result = hidden[(long)start * hidden_size + c];
    } else if (pooling == 4) {
        result = hidden[(long)(end - 1) * hidden_size + c];
    } else if (pooling == 2 || pooling == 5) {
        result = pooling == 5 ? 0.0f : NEG_INF;
        for (int t = kept; t < end; ++t) result = fmaxf(result, hidden[(long)t * hidden_size + c]);
        if (pooling == 5) result = log1pf(result);
    } else {
        float total = 0.0f;
        for (int t = kept; t < end; ++t) total += hidden[(long)t * hidden_size + c];
        const float count = (float)(end - kept);
        result = total / (pooling == 1 ? count : sqrtf(count));
    }
    out[(long)seq * hidden_size + c] = result;
}

// Rows of `x` (`[rows, cols]`) whose task is not `task` set to zero: a task adapter's update
// then reaches only its own sequences' tokens (`row_tasks[r]`: -1 for none).
extern "C" __global__ void mask_rows(float* x, const int* row_tasks, int task, long rows,
                                     int cols) {
    const long n = rows * cols;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        if (row_tasks[i / cols] != task) x[i] = 0.0f;
}

// `x += y` over n values: a residual connection outside a norm.
extern "C" __global__ void add(float* x, const float* y, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        x[i] += y[i];
}

// The f32 and bf16 entry points of each template.
#define INSTANTIATE(SUFFIX, T)                                                                   \
    extern "C" __global__ void embed_##SUFFIX(                                                  \
        float* out, const T* words, const T* positions, const T* types, const unsigned* ids,    \
        const unsigned* position_ids, const unsigned* type_ids, int hidden, float scale) {      \
        embed<T>(out, words, positions, types, ids, position_ids, type_ids, hidden, scale);     \
    }                                                                                            \
    extern "C" __global__ void layer_norm_##SUFFIX(const float* x, const float* residual,       \
                                                   const T* gamma, const T* beta, float* sum,   \
                                                   float* out, T* out_narrow, int cols,         \
                                                   float eps) {                                  \
        norm<T, false>(x, residual, gamma, beta, sum, out, out_narrow, cols, eps);              \
    }                                                                                            \
    extern "C" __global__ void rms_norm_##SUFFIX(const float* x, const float* residual,         \
                                                 const T* weight, float* sum, float* out,       \
                                                 T* out_narrow, int cols, float eps) {          \
        norm<T, true>(x, residual, weight, nullptr, sum, out, out_narrow, cols, eps);           \
    }                                                                                            \
    extern "C" __global__ void head_rms_norm_##SUFFIX(float* qkv, const T* q_weight,            \
                                                      const T* k_weight, int q_heads,           \
                                                      int kv_heads, int head_dim, int row,      \
                                                      long tokens, float eps) {                 \
        head_rms_norm<T>(qkv, q_weight, k_weight, q_heads, kv_heads, head_dim, row, tokens,     \
                         eps);                                                                   \
    }                                                                                            \
    extern "C" __global__ void bias_activation_##SUFFIX(const float* x, const T* bias,          \
                                                        float* out, T* out_narrow, long rows,   \
                                                        int cols, int activation) {             \
        bias_activation<T>(x, bias, out, out_narrow, rows, cols, activation);                   \
    }                                                                                            \
    extern "C" __global__ void gated_activation_##SUFFIX(const float* gate_up, const T* bias,   \
                                                         T* out, long rows, int width,          \
                                                         int activation) {                      \
        gated_activation<T>(gate_up, bias, out, rows, width, activation);                       \
    }                                                                                            \
    extern "C" __global__ void attention_##SUFFIX(                                              \
        const float* qkv, T* out, const int* seq_starts, const int* tile_seq,                   \
        const int* tile_first, int heads, int kv_heads, int head_dim, int key_tile,             \
        float scale, int visibility, int window, const float* bias, int bias_span) {            \
        attention<T>(qkv, out, seq_starts, tile_seq, tile_first, heads, kv_heads, head_dim,     \
                     key_tile, scale, visibility, window, bias, bias_span);                     \
    }

INSTANTIATE(f32, float)
INSTANTIATE(bf16, bf16)

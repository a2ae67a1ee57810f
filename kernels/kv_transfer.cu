// Kernels for hetsim's transfer validation (exec/src/kv.rs, exec/src/validate.rs).
//
// Paged KV pool layout on one GPU (bf16, like vLLM's block pool with K and V side by side):
//   pool[layer][block][kv(2)][kv_head][slot(16)][head_dim]
// A request owns a block table (one block id per 16 tokens, shared by all layers).
// Packed (wire) layout, exactly D_KV = 2*L*H*s*D*2 bytes with no padding:
//   packed[layer][kv][kv_head][token(s)][head_dim]
// Work is done in 16-byte vectors (8 bf16), so head_dim must be a multiple of 8.
// Compiled at run time with NVRTC; no headers needed.

typedef unsigned long long u64;
typedef unsigned int u32;

#define KV_BLOCK 16

__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Order-independent, position-dependent checksum term of one 32-bit word at logical word index idx.
// The same function is in exec/src/kv.rs (word_hash) for the CPU tests.
__device__ __forceinline__ u64 word_hash(u64 idx, u32 w) {
    return mix64((idx * 0x9E3779B97F4A7C15ULL) ^ (u64)w);
}

__device__ __forceinline__ u64 vec_hash(u64 p, uint4 v) {
    u64 base = p * 4;
    return word_hash(base, v.x) + word_hash(base + 1, v.y) + word_hash(base + 2, v.z) + word_hash(base + 3, v.w);
}

// Pool offset (in 16-byte vectors) of packed vector p.
__device__ __forceinline__ u64 paged_offset(u64 p, const int* __restrict__ table, u32 dv, u32 s, u32 heads, u32 nblocks) {
    u64 r = p / dv;
    u32 d = (u32)(p - r * dv);
    u64 r2 = r / s;
    u32 t = (u32)(r - r2 * s);
    u64 r3 = r2 / heads;
    u32 h = (u32)(r2 - r3 * heads);
    u32 kv = (u32)(r3 & 1);
    u64 layer = r3 >> 1;
    u64 block = (u64)table[t / KV_BLOCK];
    u32 slot = t % KV_BLOCK;
    return ((((layer * nblocks + block) * 2 + kv) * heads + h) * KV_BLOCK + slot) * dv + d;
}

__device__ __forceinline__ void reduce_add(u64 acc, u64* out) {
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}

// n_vec = L*2*H*s*dv packed vectors.
extern "C" __global__ void kv_gather(const uint4* __restrict__ pool, uint4* __restrict__ packed,
                                     const int* __restrict__ table, u64 n_vec, u32 dv, u32 s, u32 heads, u32 nblocks) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x; p < n_vec; p += stride)
        packed[p] = pool[paged_offset(p, table, dv, s, heads, nblocks)];
}

extern "C" __global__ void kv_scatter(const uint4* __restrict__ packed, uint4* __restrict__ pool,
                                      const int* __restrict__ table, u64 n_vec, u32 dv, u32 s, u32 heads, u32 nblocks) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x; p < n_vec; p += stride)
        pool[paged_offset(p, table, dv, s, heads, nblocks)] = packed[p];
}

// Checksum of a request's KV read through its block table, in packed (logical) order:
// equals checksum_u4 of a correct packed copy. *out must be zeroed first. blockDim multiple of 32.
extern "C" __global__ void kv_checksum_paged(const uint4* __restrict__ pool, const int* __restrict__ table,
                                             u64 n_vec, u32 dv, u32 s, u32 heads, u32 nblocks, u64* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 acc = 0;
    u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    // Every lane must reach the shuffle: loop bound per thread, reduce after.
    for (; p < n_vec; p += stride) acc += vec_hash(p, pool[paged_offset(p, table, dv, s, heads, nblocks)]);
    reduce_add(acc, out);
}

// Checksum of a contiguous buffer of n_vec 16-byte vectors. *out must be zeroed first.
extern "C" __global__ void checksum_u4(const uint4* __restrict__ buf, u64 n_vec, u64* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 acc = 0;
    for (u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x; p < n_vec; p += stride) acc += vec_hash(p, buf[p]);
    reduce_add(acc, out);
}

// Random 32-bit words (any bit pattern: the transfer path must not care what the bits mean).
extern "C" __global__ void fill_random_u32(u32* __restrict__ p, u64 n, u64 seed) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[i] = (u32)mix64(seed ^ (i * 0x9E3779B97F4A7C15ULL));
}

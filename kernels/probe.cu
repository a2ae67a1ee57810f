// Kernels for hetsim's compute probes (exec/src/probes/compute.rs).
// Compiled at run time with NVRTC; no headers needed, so NVRTC needs no include path.

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 mix64(u64 z) {
    // splitmix64 finaliser: a bijection on 64-bit words with good avalanche.
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Does nothing: times launch overhead.
extern "C" __global__ void empty_kernel() {}

// Device-memory copy with 16-byte accesses, four independent loads in flight per thread.
// Bytes moved = 2 * 16 * n (read + write).
extern "C" __global__ void copy_u4(const uint4* __restrict__ src, uint4* __restrict__ dst, u64 n) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = src[i];
        uint4 b = src[i + stride];
        uint4 c = src[i + 2 * stride];
        uint4 d = src[i + 3 * stride];
        dst[i] = a;
        dst[i + stride] = b;
        dst[i + 2 * stride] = c;
        dst[i + 3 * stride] = d;
    }
    for (; i < n; i += stride) dst[i] = src[i];
}

// Fills n bf16 values with uniform random numbers in [-scale, scale): finite, never zeros
// (zeros make matrix units run faster than real data does).
extern "C" __global__ void fill_bf16_uniform(unsigned short* __restrict__ p, u64 n, u64 seed, float scale) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 r = mix64(seed ^ (i * 0x9E3779B97F4A7C15ULL));
        // 24 random bits -> [0,1) -> [-scale, scale)
        float u = (float)(r >> 40) * (1.0f / 16777216.0f);
        float v = (2.0f * u - 1.0f) * scale;
        p[i] = (unsigned short)(__float_as_uint(v) >> 16);  // bf16 = top half of f32 (truncation)
    }
}

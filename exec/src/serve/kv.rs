//! KV-cache and embedding layouts of a real engine, and their CPU reference (for the tests).
//!
//! **Paged pool** (one per GPU, bf16), as vLLM-style engines hold it, K and V side by side:
//! `pool[layer][block][kv(2)][kv_head][slot(16)][head_dim]`. A request owns a block table: one
//! block id per 16 tokens, the same ids in every layer. Blocks are scattered through the pool.
//!
//! **Packed (wire) layout**, exactly `D_KV = 2·L·n_kv·d_head·s·2` bytes, no padding:
//! `packed[layer][kv][kv_head][token][head_dim]`: each (layer, K|V, head) is a contiguous
//! `[s, head_dim]` slab, the layout a receiver scatters from with one pass.
//!
//! **Embedding**: `[N_v][d]` bf16, contiguous (576 × 4096 × 2 = 4,718,592 B for LLaVA-1.5-7B).
//!
//! The GPU kernels in `kernels/kv_transfer.cu` implement the same mapping in 16-byte vectors
//! (8 bf16), so `head_dim` must be a multiple of 8.

use crate::cuda::device::Stream;
use crate::cuda::kernels::{Kernel, grid_for};
use crate::error::{Error, Result};
use crate::kargs;
use serde::{Deserialize, Serialize};

/// The gather / scatter / checksum kernels of this layout.
pub const KV_SRC: &str = include_str!("../../../kernels/kv_transfer.cu");

pub const BLOCK_TOKENS: usize = 16;
pub const BF16_BYTES: usize = 2;
/// 16-byte vectors: 8 bf16.
pub const VEC_ELEMS: usize = 8;

/// The shapes that decide transfer sizes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub visual_tokens: usize,
}

impl ModelShape {
    /// LLaVA-1.5-7B (Vicuna-7B decoder: 32 layers, 32 heads MHA, head_dim 128, d 4096; 576
    /// visual tokens from CLIP ViT-L/14-336).
    pub const LLAVA_15_7B: ModelShape = ModelShape {
        layers: 32,
        kv_heads: 32,
        head_dim: 128,
        hidden: 4096,
        visual_tokens: 576,
    };

    pub fn with_layers(self, layers: usize) -> ModelShape {
        ModelShape { layers, ..self }
    }
    /// D_KV = 2 · L · n_kv · d_head · s · b
    pub fn kv_bytes(&self, s: usize) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim * s * BF16_BYTES
    }
    /// D_emb = N_v · d · b
    pub fn emb_bytes(&self) -> usize {
        self.visual_tokens * self.hidden * BF16_BYTES
    }
    pub fn blocks_for(&self, s: usize) -> usize {
        s.div_ceil(BLOCK_TOKENS)
    }
    /// Bytes of one block in one layer (K and V).
    pub fn block_bytes_per_layer(&self) -> usize {
        2 * self.kv_heads * BLOCK_TOKENS * self.head_dim * BF16_BYTES
    }
    pub fn pool_bytes(&self, nblocks: usize) -> usize {
        self.layers * nblocks * self.block_bytes_per_layer()
    }
    /// The paged kernels' geometry for one request of `s` tokens.
    pub fn paged_geometry(&self, s: usize) -> PagedGeometry {
        PagedGeometry {
            n_vec: (self.kv_bytes(s) / 16) as u64,
            dv: (self.head_dim / VEC_ELEMS) as u32,
            s: s as u32,
            heads: self.kv_heads as u32,
        }
    }
    pub fn validate(&self) -> Result<()> {
        if self.layers == 0
            || self.kv_heads == 0
            || self.head_dim == 0
            || self.hidden == 0
            || self.visual_tokens == 0
        {
            return Err(Error::Invalid(format!(
                "model shape has a zero dimension: {self:?}"
            )));
        }
        if !self.head_dim.is_multiple_of(VEC_ELEMS) || !self.hidden.is_multiple_of(VEC_ELEMS) {
            return Err(Error::Invalid(format!(
                "head_dim and hidden must be multiples of 8, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// Geometry arguments of the paged kernels in `kernels/kv_transfer.cu`: 16-byte vectors in the
/// packed layout, vectors per head row, tokens, KV heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PagedGeometry {
    pub n_vec: u64,
    pub dv: u32,
    pub s: u32,
    pub heads: u32,
}

/// Queue `kv_gather` (pool → packed) or, `to_pool`, `kv_scatter` (packed → pool) of one request
/// whose blocks are listed at device address `table`, in a pool of `nblocks` blocks.
///
/// # Safety
///
/// `pool` holds `nblocks` blocks of this layout on `st`'s GPU, `packed` at least
/// `geo.n_vec` 16-byte vectors, `table` the request's `s.div_ceil(16)` block ids (each below
/// `nblocks`) as i32, and all three stay allocated until the kernel has run (`kernel` is
/// `kv_scatter` when `to_pool`, else `kv_gather`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_move(
    kernel: &Kernel,
    to_pool: bool,
    pool: u64,
    packed: u64,
    table: u64,
    nblocks: u32,
    geo: PagedGeometry,
    sms: u32,
    st: &Stream,
) -> Result<()> {
    let (n, dv, s, h) = (geo.n_vec, geo.dv, geo.s, geo.heads);
    let grid = grid_for(n, 256, sms);
    if to_pool {
        // SAFETY: kv_scatter(packed, pool, table, n_vec, dv, s, heads, nblocks), u64 / u32 as
        // declared in kernels/kv_transfer.cu; the buffers are this function's caller's to vouch for.
        unsafe {
            kernel.launch(
                grid,
                256,
                st,
                &mut kargs![packed, pool, table, n, dv, s, h, nblocks],
            )
        }
    } else {
        // SAFETY: kv_gather(pool, packed, table, n_vec, dv, s, heads, nblocks), u64 / u32 as
        // declared in kernels/kv_transfer.cu; the buffers are this function's caller's to vouch for.
        unsafe {
            kernel.launch(
                grid,
                256,
                st,
                &mut kargs![pool, packed, table, n, dv, s, h, nblocks],
            )
        }
    }
}

/// Offset (in elements) into the pool of packed element `p`. Mirrors `paged_offset` in the kernel
/// (which works in 8-element vectors; with `dim` in elements the arithmetic is the same).
pub fn paged_offset(
    p: usize,
    table: &[i32],
    dim: usize,
    s: usize,
    heads: usize,
    nblocks: usize,
) -> usize {
    let d = p % dim;
    let r = p / dim;
    let t = r % s;
    let r2 = r / s;
    let h = r2 % heads;
    let r3 = r2 / heads;
    let kv = r3 & 1;
    let layer = r3 >> 1;
    let block = table[t / BLOCK_TOKENS] as usize;
    let slot = t % BLOCK_TOKENS;
    ((((layer * nblocks + block) * 2 + kv) * heads + h) * BLOCK_TOKENS + slot) * dim + d
}

/// CPU gather: pool → packed (reference for the kernel).
pub fn gather_cpu<T: Copy>(
    pool: &[T],
    table: &[i32],
    shape: &ModelShape,
    s: usize,
    nblocks: usize,
) -> Vec<T> {
    let n = 2 * shape.layers * shape.kv_heads * s * shape.head_dim;
    (0..n)
        .map(|p| pool[paged_offset(p, table, shape.head_dim, s, shape.kv_heads, nblocks)])
        .collect()
}

/// CPU scatter: packed → pool (reference for the kernel).
pub fn scatter_cpu<T: Copy>(
    packed: &[T],
    pool: &mut [T],
    table: &[i32],
    shape: &ModelShape,
    s: usize,
    nblocks: usize,
) {
    for (p, &v) in packed.iter().enumerate() {
        pool[paged_offset(p, table, shape.head_dim, s, shape.kv_heads, nblocks)] = v;
    }
}

/// Same as the kernels' mix64 (splitmix64 finaliser).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Checksum term of 32-bit word `w` at logical word index `idx` (as in kv_transfer.cu).
pub fn word_hash(idx: u64, w: u32) -> u64 {
    mix64(idx.wrapping_mul(0x9E3779B97F4A7C15) ^ w as u64)
}

/// Checksum of a byte buffer in logical order: the sum (mod 2^64) of word_hash over its
/// little-endian 32-bit words. Position-dependent (moved data changes it), order-independent
/// to compute (so the GPU may reduce in any order and still be bit-exact with this).
pub fn checksum_cpu(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(4).enumerate().fold(0u64, |acc, (i, c)| {
        acc.wrapping_add(word_hash(
            i as u64,
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        ))
    })
}

/// A block table of `n` distinct block ids drawn from `0..nblocks`, shuffled with `seed`, so a
/// request's pages are scattered through the pool as they are in a running engine.
pub fn block_table(n: usize, nblocks: usize, seed: u64) -> Result<Vec<i32>> {
    if n > nblocks {
        return Err(Error::Invalid(format!(
            "request needs {n} blocks but the pool has {nblocks}"
        )));
    }
    let mut ids: Vec<i32> = (0..nblocks as i32).collect();
    // Fisher–Yates with mix64 as the generator (deterministic, no extra dependency).
    let mut state = seed;
    for i in (1..ids.len()).rev() {
        state = mix64(state.wrapping_add(0x9E3779B97F4A7C15));
        let j = (state % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    ids.truncate(n);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_kernels_are_embedded() {
        for k in [
            "kv_gather",
            "kv_scatter",
            "kv_checksum_paged",
            "checksum_u4",
            "fill_random_u32",
        ] {
            assert!(
                KV_SRC.contains(&format!("void {k}(")),
                "{k} missing from kv_transfer.cu"
            );
        }
    }

    #[test]
    fn llava_sizes_match_the_design_brief() {
        let m = ModelShape::LLAVA_15_7B;
        assert_eq!(m.emb_bytes(), 4_718_592);
        assert_eq!(m.kv_bytes(704), 369_098_752);
        let r = m.kv_bytes(704) as f64 / m.emb_bytes() as f64;
        assert!((r - 78.22).abs() < 0.01, "{r}");
        let r80 = m.with_layers(80).kv_bytes(704) as f64 / m.emb_bytes() as f64;
        assert!((r80 - 195.56).abs() < 0.01, "{r80}");
        assert_eq!(m.block_bytes_per_layer(), 262_144);
    }

    #[test]
    fn paged_geometry_covers_the_packed_bytes() {
        let m = ModelShape::LLAVA_15_7B;
        let g = m.paged_geometry(596);
        assert_eq!(g.n_vec * 16, m.kv_bytes(596) as u64);
        // packed[layer][kv][head][token][vector]
        assert_eq!(
            g.n_vec,
            (m.layers * 2) as u64 * g.heads as u64 * g.s as u64 * g.dv as u64
        );
        assert_eq!((g.dv, g.heads), (16, 32));
    }

    #[test]
    fn the_engine_model_ships_what_the_design_brief_says() {
        let c = crate::serve::model::llava::LlavaConfig::builtin("llava-1.5-7b", None).unwrap();
        assert_eq!(c.transfer_shape(), ModelShape::LLAVA_15_7B);
        assert_eq!(c.transfer_shape().kv_bytes(596), 312_475_648);
    }

    fn small() -> ModelShape {
        ModelShape {
            layers: 3,
            kv_heads: 2,
            head_dim: 8,
            hidden: 16,
            visual_tokens: 4,
        }
    }

    #[test]
    fn gather_then_scatter_round_trips_and_touches_only_the_requests_blocks() {
        let m = small();
        let s = 37; // not a multiple of 16: the last block is partly filled
        let nblocks = 7;
        let src_table = block_table(m.blocks_for(s), nblocks, 1).unwrap();
        let dst_table = block_table(m.blocks_for(s), nblocks, 2).unwrap();
        let pool_len = m.pool_bytes(nblocks) / BF16_BYTES;
        let src: Vec<u32> = (0..pool_len as u32).collect();
        let packed = gather_cpu(&src, &src_table, &m, s, nblocks);
        assert_eq!(packed.len() * BF16_BYTES, m.kv_bytes(s));
        // every packed element is distinct (no element read twice)
        let mut sorted = packed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), packed.len());
        let mut dst = vec![u32::MAX; pool_len];
        scatter_cpu(&packed, &mut dst, &dst_table, &m, s, nblocks);
        assert_eq!(gather_cpu(&dst, &dst_table, &m, s, nblocks), packed);
        let written = dst.iter().filter(|&&v| v != u32::MAX).count();
        assert_eq!(written, packed.len());
    }

    #[test]
    fn packed_layout_is_layer_kv_head_token_dim() {
        let m = small();
        let (s, nblocks) = (20, 4);
        let table = vec![3, 1];
        // element (layer 1, V, head 1, token 17, dim 5)
        let (layer, v) = (1, 1);
        let p = (((layer * 2 + v) * m.kv_heads + 1) * s + 17) * m.head_dim + 5;
        let off = paged_offset(p, &table, m.head_dim, s, m.kv_heads, nblocks);
        let expect = ((((layer * nblocks + 1) * 2 + v) * m.kv_heads + 1) * BLOCK_TOKENS + 1)
            * m.head_dim
            + 5;
        assert_eq!(off, expect);
    }

    #[test]
    fn checksum_is_position_dependent_and_sensitive_to_one_bit() {
        let data: Vec<u8> = (0..4096u32)
            .flat_map(|i| (mix64(i as u64) as u32).to_le_bytes())
            .collect();
        let c = checksum_cpu(&data);
        let mut flipped = data.clone();
        flipped[1000] ^= 1;
        assert_ne!(c, checksum_cpu(&flipped));
        let mut swapped = data.clone();
        swapped.swap(0, 4);
        swapped.swap(1, 5);
        swapped.swap(2, 6);
        swapped.swap(3, 7);
        assert_ne!(c, checksum_cpu(&swapped));
        assert_eq!(c, checksum_cpu(&data.clone()));
    }

    #[test]
    fn checksum_reduces_in_any_order() {
        // The GPU adds per-thread partial sums in arbitrary order: splitting must not matter.
        let data: Vec<u8> = (0..1000u32)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        let whole = checksum_cpu(&data);
        let (a, b) = data.split_at(1600);
        let part_b = b.chunks_exact(4).enumerate().fold(0u64, |acc, (i, c)| {
            acc.wrapping_add(word_hash(
                (i + 400) as u64,
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            ))
        });
        assert_eq!(whole, checksum_cpu(a).wrapping_add(part_b));
    }

    #[test]
    fn block_tables_are_distinct_and_deterministic() {
        let t = block_table(44, 128, 7).unwrap();
        let mut s = t.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 44);
        assert!(t.iter().all(|&b| (0..128).contains(&b)));
        assert_eq!(t, block_table(44, 128, 7).unwrap());
        assert_ne!(t, block_table(44, 128, 8).unwrap());
        assert!(block_table(5, 4, 0).is_err());
    }
}

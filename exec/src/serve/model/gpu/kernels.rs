//! The model's kernels (`kernels/llava.cu`): which ones the engine uses, which of them launch
//! early, the registry that compiles and resolves them once per GPU, and the launch shapes
//! that depend on the batch (decode-attention partitions, flash-attention rows, norm groups).

use crate::cuda::device::Gpu;
use crate::cuda::kernels::{Kernel, Module};
use crate::error::Result;
use std::collections::HashMap;

/// The model's kernels, compiled with NVRTC when a model is loaded.
pub const LLAVA_SRC: &str = include_str!("../../../../../kernels/llava.cu");

/// Every kernel of `kernels/llava.cu` the engine uses.
pub const KERNELS: [&str; 25] = [
    "gemv",
    "gemm_skinny",
    "fill_uniform",
    "zero_cols",
    "rmsnorm",
    "layernorm",
    "rope_kv_append",
    "silu_mul",
    "gelu_erf",
    "quick_gelu",
    "add",
    "embed_splice",
    "gather_rows",
    "im2col",
    "clip_embed",
    "drop_cls",
    "qwen_patchify",
    "rope_2d",
    "flash_attn_d64",
    "flash_attn_d128",
    "decode_attn_short",
    "decode_attn_g1",
    "decode_attn_gqa",
    "decode_attn_gqa2",
    "argmax_rows",
];

/// Kernels launched as programmatic dependents on GPUs that have them (compute capability 9+):
/// each begins with `after_predecessor` in kernels/llava.cu. The small kernels between a decode
/// step's products, where launch latency is a large part of the time.
pub const EARLY_LAUNCH: [&str; 13] = [
    "gemv",
    "gemm_skinny",
    "rmsnorm",
    "layernorm",
    "silu_mul",
    "embed_splice",
    "gather_rows",
    "rope_kv_append",
    "decode_attn_short",
    "decode_attn_g1",
    "decode_attn_gqa",
    "decode_attn_gqa2",
    "argmax_rows",
];

/// Kernels whose blocks take dynamic shared memory, and how many bytes (kernels/llava.cu
/// `<NAME>_SHARED`): three or two stages of 64 keys' and values' rows; four stages of a weight
/// tile and the rows it multiplies.
pub const DYNAMIC_SHARED: [(&str, u32); 3] = [
    ("decode_attn_gqa", 104_448),
    ("decode_attn_gqa2", 69_632),
    ("gemm_skinny", 110_592),
];

/// Kernels whose shared memory some GPUs cannot grant (compute capability 8.6 and 8.9 give a
/// block at most 99 KB), and what runs in their place there: decode attention with two stages
/// under the name of the three-stage kernel, decode products on cuBLASLt alone.
const OPTIONAL: [(&str, Option<&str>); 2] = [
    ("decode_attn_gqa", Some("decode_attn_gqa2")),
    ("gemm_skinny", None),
];

/// Tokens per KV block (as in the kernels).
pub const KV_BLOCK: usize = 16;
/// Tokens per decode-attention partition: the shortest (the buffers of partial results are sized
/// by it) and the longest (`PART` in the kernels).
pub const DECODE_PART: usize = 64;
pub const DECODE_PART_MAX: usize = 256;

/// Partition length of a decode step of `batch` sequences: short for small batches, where
/// sequences × heads alone would leave most SMs idle; long for large ones, where fewer
/// partial results to merge is the better trade.
pub fn decode_part(batch: usize) -> usize {
    if batch < 8 {
        DECODE_PART
    } else {
        DECODE_PART_MAX
    }
}

/// The most query heads per KV head the grouped-query decode attention serves: one m16 tile
/// of rows (kernels/llava.cu `decode_attn_gqa`).
pub const DECODE_GROUP_MAX: usize = 16;

/// The decode-attention kernel for partitions of `part` tokens of a decoder whose KV heads
/// each serve `group` query heads (at most `DECODE_GROUP_MAX`, which model loading checks), and
/// the query heads each of its blocks serves. Short partitions (small batches) take a block per
/// query head, which keeps the SMs busy when there are few sequences; long ones a block per
/// KV head, which reads each key and value row once for the whole group: on tensor cores
/// where the group has several heads (`decode_attn_gqa`), else `decode_attn_body`'s scalar
/// loop.
pub fn decode_attn_kernel(part: usize, group: usize) -> (&'static str, usize) {
    if part <= DECODE_PART {
        ("decode_attn_short", 1)
    } else if group <= 1 {
        ("decode_attn_g1", 1)
    } else {
        ("decode_attn_gqa", group)
    }
}

/// How one layer's decode attention is launched: the kernel, the query heads each block
/// serves, the partition length (`part`: for `decode_attn_gqa` the shortest), the partitions
/// per sequence (the grid's x: the longest context at `part`) and, for `decode_attn_gqa`, the
/// blocks the GPU holds at once (`wave`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLaunch {
    pub kernel: &'static str,
    pub heads_per_block: usize,
    pub part: usize,
    pub partitions: usize,
    pub wave: u32,
}

/// The decode attention of `batch` sequences of a decoder with `heads` query and `kv_heads` KV
/// heads, whose partial results have room for `max_parts` partitions of `DECODE_PART` tokens
/// (the longest context), on a GPU that holds `gqa_slots` blocks of `decode_attn_gqa` at once.
/// The fixed-length kernels cover each sequence with partitions of `part`. The grouped-query
/// kernel sizes one partition length for the whole step from its total context, as long as
/// keeps its blocks in one wave (kernels/llava.cu `decode_attn_gqa`): a partition's pipeline
/// start and merge are paid once, not once per 256 tokens (measured on an H200, Qwen2.5-VL-7B at
/// batch 64 and 1,088 tokens of context: decode attention 1.68 ms at 5 partitions of 256
/// tokens a sequence, 1.67 ms at 3 of 512, 1.33 ms at one).
pub fn decode_launch(
    batch: usize,
    heads: usize,
    kv_heads: usize,
    max_parts: usize,
    gqa_slots: usize,
) -> DecodeLaunch {
    let part = decode_part(batch);
    let (kernel, heads_per_block) = decode_attn_kernel(part, heads / kv_heads.max(1));
    DecodeLaunch {
        kernel,
        heads_per_block,
        part,
        partitions: (max_parts * DECODE_PART).div_ceil(part).max(1),
        wave: if kernel == "decode_attn_gqa" {
            gqa_slots.min(u32::MAX as usize) as u32
        } else {
            0
        },
    }
}

/// Whether the decode attention takes a decoder of `heads` query and `kv_heads` KV heads.
pub fn check_decode_group(name: &str, heads: usize, kv_heads: usize) -> crate::error::Result<()> {
    if kv_heads > 0 && heads.is_multiple_of(kv_heads) && heads / kv_heads <= DECODE_GROUP_MAX {
        return Ok(());
    }
    Err(crate::error::Error::Invalid(format!(
        "{name}: {heads} query heads over {kv_heads} KV heads; the decode attention takes a \
         whole number of query heads per KV head, at most {DECODE_GROUP_MAX}"
    )))
}

/// Query rows of a flash-attention block (kernels/llava.cu: 4 warps of 16 rows).
pub const FLASH_ROWS: usize = 64;

/// The flash-attention kernel for heads of `head_dim`.
pub fn flash_attn_kernel(head_dim: usize) -> &'static str {
    if head_dim == 64 {
        "flash_attn_d64"
    } else {
        "flash_attn_d128"
    }
}

/// Every kernel of [`KERNELS`], compiled for one GPU.
pub struct Kernels {
    k: HashMap<&'static str, Kernel>,
    /// Blocks of `decode_attn_gqa` resident on the whole GPU at once (see [`decode_launch`]).
    pub decode_gqa_slots: usize,
    /// Blocks of `gemm_skinny` resident on the whole GPU at once: the grid of its products
    /// (0 where this GPU cannot run it, see `OPTIONAL`, and `get("gemm_skinny")` would panic).
    pub skinny_blocks: usize,
    _module: Module,
}

impl Kernels {
    pub fn load(gpu: &Gpu) -> Result<Kernels> {
        let m = Module::load(gpu, "llava.cu", LLAVA_SRC)?;
        let mut k = HashMap::new();
        let early = gpu.info.compute_capability.0 >= 9;
        let function = |name: &str| -> Result<Kernel> {
            let mut f = m.function(name)?;
            f.early_launch = early && EARLY_LAUNCH.contains(&name);
            if let Some(&(_, bytes)) = DYNAMIC_SHARED.iter().find(|(n, _)| *n == name) {
                f.set_dynamic_shared(bytes)?;
            }
            Ok(f)
        };
        let mut skinny_runs = true;
        for name in KERNELS {
            let f = match (function(name), OPTIONAL.iter().find(|o| o.0 == name)) {
                (Ok(f), _) => f,
                (Err(_), Some((_, Some(instead)))) => function(instead)?,
                (Err(_), Some((_, None))) => {
                    skinny_runs = false;
                    continue;
                }
                (Err(e), None) => return Err(e),
            };
            k.insert(name, f);
        }
        let sms = gpu.info.sms as usize;
        let decode_gqa_slots = sms * k["decode_attn_gqa"].resident_blocks_per_sm(128)? as usize;
        let skinny_blocks = if skinny_runs {
            sms * k["gemm_skinny"].resident_blocks_per_sm(256)? as usize
        } else {
            0
        };
        Ok(Kernels {
            k,
            decode_gqa_slots,
            skinny_blocks,
            _module: m,
        })
    }
    pub fn get(&self, name: &str) -> &Kernel {
        // Every name used below is in KERNELS, which `load` resolved.
        &self.k[name]
    }
}

/// How `layernorm` / `rmsnorm` cover `rows` rows of `d` values: `group` threads per row (whole
/// warps, enough that each holds at most 4 of the row's 16-byte vectors in registers —
/// kernels/llava.cu `HELD` — up to 256: the kernels' launch bound, which leaves them the
/// registers for that), `block / group` rows per block, one pass over the rows.
/// A row of 4096 gets 128 threads, so even a batch of one row has 128 loads in flight, not 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormLaunch {
    pub grid: u32,
    pub block: u32,
    pub group: u32,
}

impl NormLaunch {
    pub fn new(rows: usize, d: usize) -> NormLaunch {
        const HELD: usize = 4;
        let group = if d.is_multiple_of(8) {
            (d / 8).div_ceil(HELD).next_multiple_of(32).clamp(32, 256)
        } else {
            32
        };
        let per_block = (256 / group).max(1);
        NormLaunch {
            grid: rows.div_ceil(per_block).max(1) as u32,
            block: (group * per_block) as u32,
            group: group as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EARLY_LAUNCH, KERNELS, LLAVA_SRC, NormLaunch};

    #[test]
    fn model_kernels_are_embedded() {
        for k in KERNELS {
            assert!(
                LLAVA_SRC.contains(&format!("void {k}(")) || LLAVA_SRC.contains(&format!(") {k}(")),
                "{k} missing from llava.cu"
            );
        }
        for g in 1..=super::DECODE_GROUP_MAX {
            assert_eq!(super::decode_attn_kernel(64, g), ("decode_attn_short", 1));
            let (k, per_block) = super::decode_attn_kernel(256, g);
            assert!(KERNELS.contains(&k) && per_block == g, "{k}");
        }
    }

    /// The body of `extern "C"` kernel `name` in kernels/llava.cu.
    fn kernel_body(name: &str) -> &'static str {
        let sig = LLAVA_SRC
            .find(&format!(" {name}("))
            .unwrap_or_else(|| panic!("{name} not in llava.cu"));
        let open = sig + LLAVA_SRC[sig..].find('{').unwrap();
        let mut depth = 0;
        for (i, c) in LLAVA_SRC[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &LLAVA_SRC[open..open + i];
                    }
                }
                _ => {}
            }
        }
        panic!("{name}: unbalanced braces")
    }

    #[test]
    fn decode_launches_cover_the_longest_context() {
        use super::{DecodeLaunch, decode_launch};
        // 1,088 tokens of context: 17 partitions of 64. A GPU that holds 396 blocks at once (an
        // H200's 132 SMs × 3 of decode_attn_gqa2).
        let l = |kernel, heads_per_block, part, partitions, wave| DecodeLaunch {
            kernel,
            heads_per_block,
            part,
            partitions,
            wave,
        };
        let cases = [
            // Small batches: short partitions, every kernel.
            ((4, 28, 4, 17), l("decode_attn_short", 1, 64, 17, 0)),
            ((4, 32, 32, 17), l("decode_attn_short", 1, 64, 17, 0)),
            // Qwen2.5-VL-7B (28 heads over 4): a block per KV head, its partitions sized in
            // the kernel from the wave.
            ((64, 28, 4, 17), l("decode_attn_gqa", 7, 256, 5, 396)),
            ((16, 28, 4, 170), l("decode_attn_gqa", 7, 256, 43, 396)),
            // MHA (LLaVA-1.5) keeps fixed partitions of the longest context.
            ((64, 32, 32, 17), l("decode_attn_g1", 1, 256, 5, 0)),
        ];
        for ((batch, heads, kv_heads, max_parts), want) in cases {
            assert_eq!(decode_launch(batch, heads, kv_heads, max_parts, 396), want);
        }
    }

    #[test]
    fn dynamic_shared_memory_is_what_the_kernels_were_written_for() {
        for (name, bytes) in super::DYNAMIC_SHARED {
            assert!(KERNELS.contains(&name), "{name}");
            // Declared by the kernel or by the shared body it runs.
            let body = kernel_body(name);
            let declares = |b: &str| b.contains("extern __shared__");
            let shared_body = ["decode_gqa_body", "skinny_body"]
                .iter()
                .any(|b| body.contains(&format!("{b}<")) && declares(kernel_body(b)));
            assert!(declares(body) || shared_body, "{name}");
            // Above 48 KiB a kernel must be allowed its shared memory before launch; Hopper
            // grants at most 227 KiB per block.
            assert!((48 * 1024..=227 * 1024).contains(&bytes), "{name}: {bytes}");
        }
        for (name, bytes) in super::DYNAMIC_SHARED {
            let define = format!("#define {}_SHARED {bytes}\n", name.to_uppercase());
            assert!(LLAVA_SRC.contains(&define), "{define}");
        }
    }

    #[test]
    fn early_launched_kernels_wait_for_their_predecessor() {
        // Launched before the kernel ahead finishes, a kernel that does not wait would read
        // its inputs half-written: each must call after_predecessor, itself or through the
        // shared body it runs.
        for name in EARLY_LAUNCH {
            assert!(KERNELS.contains(&name), "{name}");
            let body = kernel_body(name);
            let waits = [
                "after_predecessor()",
                "norm_rows(",
                "decode_attn_body<",
                "decode_gqa_body<",
                "skinny_body<",
            ]
            .iter()
            .any(|w| body.contains(w));
            assert!(waits, "{name} does not wait for its predecessor");
        }
        assert!(
            kernel_body("norm_rows")
                .trim_start_matches('{')
                .trim_start()
                .starts_with("after_predecessor();")
        );
        for body in ["decode_attn_body", "decode_gqa_body"] {
            assert!(
                kernel_body(body)
                    .trim_start_matches('{')
                    .trim_start()
                    .starts_with("after_predecessor();"),
                "{body}"
            );
        }
        // gemm_skinny requests its first weight tiles first (weights never change while
        // serving) and waits before it reads X or writes anything.
        let skinny = kernel_body("skinny_body");
        let wait = skinny
            .find("after_predecessor();")
            .expect("skinny_body waits");
        for after in ["load_x(ld", "atomicAdd", "*y ="] {
            assert!(skinny.find(after).is_some_and(|i| i > wait), "{after}");
        }
    }

    fn nl(rows: usize, d: usize) -> (u32, u32, u32) {
        let l = NormLaunch::new(rows, d);
        (l.grid, l.block, l.group)
    }

    #[test]
    fn norm_launch_gives_each_thread_at_most_four_vectors_of_a_row() {
        // 7B rows: 512 vectors → 128 threads, two rows a block.
        assert_eq!(nl(1, 4096), (1, 256, 128));
        assert_eq!(nl(64, 4096), (32, 256, 128));
        assert_eq!(nl(9, 4096), (5, 256, 128));
        // CLIP's 1024: a warp per row, 8 rows a block; 577 rows → 73 blocks.
        assert_eq!(nl(577, 1024), (73, 256, 32));
        // 13B's 5120: 640 vectors → 160 threads, one row a block.
        assert_eq!(nl(3, 5120), (3, 160, 160));
        // Past 8192 values (256 threads) the kernel re-reads the row instead.
        assert_eq!(nl(2, 65536), (2, 256, 256));
        // Not a multiple of 8: the plain per-value path, one warp.
        assert_eq!(nl(9, 250), (2, 256, 32));
        assert_eq!(nl(0, 4096), (1, 256, 128));
    }
}

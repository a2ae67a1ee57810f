//! The matrix products of the forward pass: cuBLASLt plans per shape (bias and residual add in
//! its epilogue) and, for decode batches, our own kernels where they were timed faster: `gemv`
//! for one row, `gemm_skinny` for up to `SKINNY_MAX_M`.
//! `Y[m, n] (= or +=) X[m, k] · W[n, k]ᵀ`, row-major, as a PyTorch `Linear`.

use super::kernels::Kernels;
use super::tensor::DTensor;
use crate::cuda::device::{DeviceBuffer, Event, Gpu, Stream};
use crate::cuda::gemm::{Epilogue, Lt, Plan};
use crate::error::Result;
use crate::kargs;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Rows of the products our `gemv` kernel takes (batch-1 decode), where it races cuBLASLt.
/// An earlier kernel took up to 8 but lost to cuBLASLt above one (the engine's first H100 record,
/// `git show 9f3a3c1:exec/REPORT.md`, section 6).
pub const GEMV_MAX_M: usize = 1;

/// The most rows `gemm_skinny` takes (kernels/llava.cu: four m16 tiles), and the multiples its
/// column count and depth must be (a tile of 128 columns, k tiles of 64).
pub const SKINNY_MAX_M: usize = 64;
const SKINNY_N: usize = 128;
const SKINNY_K: usize = 64;
/// Floats of one block's slot of partial sums (kernels/llava.cu `SK_SLOT`); two slots a block.
const SKINNY_SLOT_FLOATS: usize = 4 * 2 * 4 * 256;
/// Column tiles the workspace counts arrivals for: products of up to 524,288 columns.
const SKINNY_TILES: usize = 4096;

/// Which of our kernels races cuBLASLt for a product of `m` rows, `n` columns and depth `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurProduct {
    Gemv,
    Skinny,
}

impl OurProduct {
    pub fn takes(m: usize, n: usize, k: usize) -> Option<OurProduct> {
        if m <= GEMV_MAX_M {
            Some(OurProduct::Gemv)
        } else if m <= SKINNY_MAX_M
            && n.is_multiple_of(SKINNY_N)
            && k.is_multiple_of(SKINNY_K)
            && n / SKINNY_N <= SKINNY_TILES
        {
            Some(OurProduct::Skinny)
        } else {
            None
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OurProduct::Gemv => "gemv",
            OurProduct::Skinny => "gemm_skinny",
        }
    }
}

/// Which kernel runs a product our kernels take (`OurProduct::takes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallProducts {
    /// Per shape, whichever of ours and the tuned cuBLASLt plan was faster when timed.
    Fastest,
    /// Always ours (for comparison).
    Ours,
    /// Always cuBLASLt (for comparison).
    CuBlasLt,
}

/// The rows a product runs at whose row count changes from step to step (the ViT's tokens
/// under dynamic resolution): `m` rounded up to a 32nd of its power of two, at least 64. A new
/// shape's first step ran 10–30 ms over its steady-state time, far more than its plan making
/// (`exec/results/2026-12-03-h200-ttft-tail/first-shapes/`; the decoder's prefill products, not
/// padded yet, still cost Qwen2.5-VL's light-load steps 6 ms each at a new token count,
/// `exec/results/2026-12-04-h200-qwen-validate/validate-qwen/steps.csv.gz`); with the
/// rows padded, the shapes a model can meet are few enough to run each once before serving
/// (`padded_row_counts`). The padding rows cost at most 1/32 of the product (~1.5 % on average);
/// rows are independent in a product, so what the padding holds reaches no real row.
pub fn padded_rows(m: usize) -> usize {
    let step = (prev_power_of_two(m.max(1)) / 32).max(64);
    m.max(1).next_multiple_of(step)
}

/// Every value `padded_rows` takes up to `padded_rows(max)`, ascending.
pub fn padded_row_counts(max: usize) -> impl Iterator<Item = usize> {
    let last = padded_rows(max);
    std::iter::successors(Some(padded_rows(1)), move |&r| {
        (r < last).then(|| padded_rows(r + 1))
    })
}

fn prev_power_of_two(m: usize) -> usize {
    1 << (usize::BITS - 1 - m.leading_zeros())
}

/// (m, n, k, epilogue) of a product.
pub type ProductKey = (usize, usize, usize, Epilogue);

/// Seconds one product took in each kernel when timed alone (median of 5 runs, each from a
/// cold L2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductRace {
    pub ours: OurProduct,
    pub ours_s: f64,
    pub cublaslt_s: f64,
    /// cuBLASLt's fastest candidate: how many were timed, and the parts it splits k into.
    pub cublaslt_candidates: usize,
    pub cublaslt_split_k: u32,
}

impl ProductRace {
    pub fn ours_wins(&self) -> bool {
        self.ours_s < self.cublaslt_s
    }

    /// The kernel the engine runs the product in.
    pub fn winner(&self) -> &'static str {
        if self.ours_wins() {
            self.ours.name()
        } else {
            "cuBLASLt"
        }
    }
}

/// What `gemm_skinny` needs beside its operands: one wave of blocks, a slot of partial sums
/// for each, and the column tiles' arrival counts (zero between products: the last block of
/// each tile resets its count). Products run on one stream at a time, as cuBLASLt's workspace
/// already requires.
struct SkinnyWorkspace {
    blocks: u32,
    part: DeviceBuffer,
    count: DeviceBuffer,
}

/// cuBLASLt workspace of every product.
const WORKSPACE: usize = 32 << 20;

/// One model's matrix products on one GPU: the cuBLASLt handle, its plans by shape, the timed
/// races of small products, and the workspace they share.
pub struct Products {
    lt: Lt,
    plans: RefCell<HashMap<ProductKey, Plan>>,
    /// Small-M shapes timed in gemv and in their tuned cuBLASLt plan.
    races: RefCell<HashMap<ProductKey, ProductRace>>,
    /// Host seconds spent creating cuBLASLt plans (descriptors and heuristic queries) so far.
    planning_s: Cell<f64>,
    ws: DeviceBuffer,
    /// None where the GPU cannot run `gemm_skinny` (`Kernels::skinny_blocks` is 0).
    skinny: Option<SkinnyWorkspace>,
    pub small: SmallProducts,
}

impl Products {
    pub fn new(gpu: &Gpu, k: &Kernels) -> Result<Products> {
        let skinny = match k.skinny_blocks {
            0 => None,
            blocks => {
                let count = gpu.alloc(SKINNY_TILES * 4)?;
                count.copy_from_host(&[0; SKINNY_TILES * 4])?;
                Some(SkinnyWorkspace {
                    blocks: blocks.min(u32::MAX as usize) as u32,
                    part: gpu.alloc(blocks * 2 * SKINNY_SLOT_FLOATS * 4)?,
                    count,
                })
            }
        };
        Ok(Products {
            lt: Lt::new()?,
            plans: RefCell::new(HashMap::new()),
            races: RefCell::new(HashMap::new()),
            planning_s: Cell::new(0.0),
            ws: gpu.alloc(WORKSPACE)?,
            skinny,
            small: SmallProducts::Fastest,
        })
    }

    /// Which of our kernels takes a product of this shape on this GPU.
    fn ours(&self, m: usize, n: usize, k: usize) -> Option<OurProduct> {
        OurProduct::takes(m, n, k).filter(|o| *o == OurProduct::Gemv || self.skinny.is_some())
    }

    /// Plans for the products of a decode step of `m` rows (`weights`: each weight with its
    /// epilogue), each the fastest on this GPU of up to 16 cuBLASLt heuristic candidates (and
    /// their split-k variants, `Lt::add_split_k_variants`) and,
    /// where one of our kernels takes the shape, of ours (each timed from a cold L2 into scratch
    /// outputs, so nothing the step reads changes). Called before every decode step, outside
    /// graph capture (which cannot time): a plan made inside capture would get the heuristic's
    /// first guess. Nothing to do once the plans exist.
    pub fn tune(
        &self,
        gpu: &Gpu,
        k: &Kernels,
        s: &Stream,
        m: usize,
        weights: Vec<(&DTensor, Epilogue)>,
    ) -> Result<()> {
        let raced = |w: &DTensor| match self.small {
            SmallProducts::Fastest => self.ours(m, w.shape[0], w.shape[1]),
            SmallProducts::Ours | SmallProducts::CuBlasLt => None,
        };
        let products: Vec<(&DTensor, Epilogue)> = weights
            .into_iter()
            .filter(|(w, ep)| {
                let key = (m, w.shape[0], w.shape[1], *ep);
                let ours_runs = self.small == SmallProducts::Ours
                    && self.ours(m, w.shape[0], w.shape[1]).is_some();
                !ours_runs
                    && (!self.plans.borrow().contains_key(&key)
                        || (raced(w).is_some() && !self.races.borrow().contains_key(&key)))
            })
            .collect();
        if products.is_empty() {
            return Ok(());
        }
        let kmax = products.iter().map(|p| p.0.shape[1]).max().unwrap_or(1);
        let nmax = products.iter().map(|p| p.0.shape[0]).max().unwrap_or(1);
        let x = gpu.alloc(m * kmax * 2)?;
        let y = gpu.alloc(m * nmax * 4)?;
        // A bias epilogue needs a bias to read (its values do not change the time).
        let bias = gpu.alloc(nmax * 2)?;
        let (e0, e1) = (Event::timing(gpu)?, Event::timing(gpu)?);
        // In a decode step every weight comes from HBM (13 GB stream through the L2 between two
        // uses of one matrix); timed back to back, a 4096² matrix would sit in the 50 MB L2 and
        // read at 4 TB/s. So each run starts with the L2 flushed by writing twice its size.
        let flush = gpu.alloc((2 * gpu.info.l2_bytes as usize).max(1 << 20))?;
        // Median seconds of 5 runs after a warm-up (a candidate the library turns down fails
        // there).
        let time = |run: &dyn Fn() -> Result<()>| -> Result<f64> {
            run()?;
            let mut t = Vec::with_capacity(5);
            for _ in 0..5 {
                flush.memset_async(0, s)?;
                e0.record(s)?;
                run()?;
                e1.record(s)?;
                t.push(e0.elapsed_ms(&e1)? * 1e-3);
            }
            Ok(crate::stats::median(&t))
        };
        for (w, ep) in products {
            let (n, kk) = (w.shape[0], w.shape[1]);
            let key = (m, n, kk, ep);
            let b = if ep.bias { bias.ptr } else { 0 };
            let run_lt = |p: &Plan| {
                self.lt
                    .run_with(p, x.ptr, w.ptr(), y.ptr, b, self.ws.ptr, s)
            };
            let (lt_s, cublaslt_candidates, cublaslt_split_k) =
                match self.plans.borrow_mut().entry(key) {
                    Entry::Occupied(e) => {
                        let p = e.get();
                        (time(&|| run_lt(p))?, p.candidates(), p.chosen_split_k())
                    }
                    Entry::Vacant(v) => {
                        let mut p = self.lt.plan_with(m, n, kk, WORKSPACE, 16, ep)?;
                        self.lt.add_split_k_variants(&mut p);
                        let (t, _) = p.choose_fastest(|p| time(&|| run_lt(p)))?;
                        let p = v.insert(p);
                        (t, p.candidates(), p.chosen_split_k())
                    }
                };
            if let Some(ours) = raced(w) {
                let p = Operands {
                    x: x.ptr,
                    w,
                    bias: b,
                    y: y.ptr,
                    m,
                    ep,
                };
                let ours_s = time(&|| self.run_ours(ours, k, s, &p))?;
                let race = ProductRace {
                    ours,
                    ours_s,
                    cublaslt_s: lt_s,
                    cublaslt_candidates,
                    cublaslt_split_k,
                };
                self.races.borrow_mut().insert(key, race);
            }
        }
        s.synchronize()
    }

    /// cuBLASLt plans made so far (one per product shape and epilogue).
    pub fn plans_made(&self) -> usize {
        self.plans.borrow().len()
    }

    /// Host seconds spent making them (not counting the timed races of decode plans).
    pub fn planning_seconds(&self) -> f64 {
        self.planning_s.get()
    }

    /// One line per small-M product raced so far: its shape, both times and the winner, for
    /// logs (a table's and a replay's engines each choose, and can choose apart).
    pub fn race_lines(&self) -> Vec<String> {
        self.product_races()
            .into_iter()
            .map(|((m, n, k), r)| {
                format!(
                    "M={m:3} N={n:6} K={k:6}: {} {:.1} us, cuBLASLt {:.1} us (split {}): {}",
                    r.ours.name(),
                    r.ours_s * 1e6,
                    r.cublaslt_s * 1e6,
                    r.cublaslt_split_k,
                    r.winner()
                )
            })
            .collect()
    }

    /// The small-M products timed so far, by (m, n, k).
    pub fn product_races(&self) -> Vec<((usize, usize, usize), ProductRace)> {
        let mut v: Vec<_> = self
            .races
            .borrow()
            .iter()
            .map(|(k, r)| ((k.0, k.1, k.2), *r))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Y[m, n] (= or +=) X[m, k] · W[n, k]ᵀ (+ bias), planned once per shape.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        k: &Kernels,
        s: &Stream,
        x: u64,
        w: &DTensor,
        y: u64,
        m: usize,
        bias: Option<&DTensor>,
        accumulate: bool,
        out_f32: bool,
    ) -> Result<()> {
        let (n, kk) = (w.shape[0], w.shape[1]);
        let ep = Epilogue {
            bias: bias.is_some(),
            accumulate,
            out_f32,
        };
        let key = (m, n, kk, ep);
        let ours = self.ours(m, n, kk).filter(|_| match self.small {
            SmallProducts::Ours => true,
            SmallProducts::CuBlasLt => false,
            SmallProducts::Fastest => self.races.borrow().get(&key).is_some_and(|r| r.ours_wins()),
        });
        let bias = bias.map_or(0, |b| b.ptr());
        if let Some(ours) = ours {
            let p = Operands {
                x,
                w,
                bias,
                y,
                m,
                ep,
            };
            return self.run_ours(ours, k, s, &p);
        }
        crate::cuda::timeline::mark(s, || format!("cuBLASLt {m}×{n}×{kk}"))?;
        let mut plans = self.plans.borrow_mut();
        let p = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let started = std::time::Instant::now();
                let p = self.lt.plan_with(m, n, kk, WORKSPACE, 1, ep)?;
                self.planning_s
                    .set(self.planning_s.get() + started.elapsed().as_secs_f64());
                v.insert(p)
            }
        };
        self.lt.run_with(p, x, w.ptr(), y, bias, self.ws.ptr, s)
    }

    /// The product through one of our kernels.
    fn run_ours(&self, ours: OurProduct, k: &Kernels, s: &Stream, p: &Operands) -> Result<()> {
        match (ours, &self.skinny) {
            (OurProduct::Skinny, Some(ws)) => skinny(k, s, ws, ws.blocks, p),
            _ => gemv(k, s, p),
        }
    }

    /// `gemm_skinny` on a grid of `blocks` instead of one wave (the selftest's: the blocks'
    /// ranges, and so which tiles are shared, change with the grid; the result must not);
    /// None where this GPU cannot run it.
    pub fn skinny_on_grid(
        &self,
        k: &Kernels,
        s: &Stream,
        blocks: u32,
        p: &Operands,
    ) -> Option<Result<()>> {
        let ws = self.skinny.as_ref()?;
        let (n, kk) = (p.w.shape[0], p.w.shape[1]);
        if OurProduct::takes(p.m, n, kk) != Some(OurProduct::Skinny) {
            return Some(Err(crate::error::Error::Invalid(format!(
                "gemm_skinny does not take {} × {n} × {kk}",
                p.m
            ))));
        }
        Some(skinny(k, s, ws, blocks, p))
    }
}

/// The operands of one product `Y[m, n] (= or +=) X[m, k] · W[n, k]ᵀ (+ bias)`: device
/// addresses of X (m rows of k bf16), Y (m rows of n values of the epilogue's output type) and
/// the bias (0: none; else n bf16).
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub x: u64,
    pub w: &'a DTensor,
    pub bias: u64,
    pub y: u64,
    pub m: usize,
    pub ep: Epilogue,
}

/// The product of one row through our gemv kernel.
pub fn gemv(k: &Kernels, s: &Stream, p: &Operands) -> Result<()> {
    let (n, kk) = (p.w.shape[0], p.w.shape[1]);
    let (n32, k32) = (n as u32, kk as u32);
    let (x, wp, bias, y) = (p.x, p.w.ptr(), p.bias, p.y);
    let (acc, f32o) = (p.ep.accumulate as i32, p.ep.out_f32 as i32);
    let blocks = n.div_ceil(2).div_ceil(8) as u32; // 8 warps of 2 rows per block
    // SAFETY: gemv(X, W, bias, Y, N, K, accumulate, out_f32): w is an [n, k] weight, x holds k
    // bf16, bias 0 or n bf16, and y n values of the output type (the caller's contract,
    // `Operands`); 8 warps of 2 rows a block cover the n rows.
    unsafe {
        k.get("gemv").launch(
            blocks,
            256,
            s,
            &mut kargs![x, wp, bias, y, n32, k32, acc, f32o],
        )
    }
}

/// The product of 2…64 rows through `gemm_skinny` on `blocks` blocks (at most the workspace's;
/// fewer where the product has fewer iterations of a column tile and a k tile than that).
fn skinny(k: &Kernels, s: &Stream, ws: &SkinnyWorkspace, blocks: u32, p: &Operands) -> Result<()> {
    let (n, kk) = (p.w.shape[0], p.w.shape[1]);
    let iterations = (n / SKINNY_N) * (kk / SKINNY_K);
    let blocks = (blocks.min(ws.blocks) as usize).min(iterations).max(1) as u32;
    let (m32, n32, k32) = (p.m as u32, n as u32, kk as u32);
    let (x, wp, bias, y) = (p.x, p.w.ptr(), p.bias, p.y);
    let (acc, f32o) = (p.ep.accumulate as i32, p.ep.out_f32 as i32);
    let (part, count) = (ws.part.ptr, ws.count.ptr);
    // SAFETY: gemm_skinny(X, W, bias, Y, part, count, m, n, k, accumulate, out_f32) in
    // kernels/llava.cu: w is an [n, k] weight with n a multiple of 128 and k of 64 and at most
    // SKINNY_TILES column tiles (OurProduct::takes), x, y and bias as `Operands` says with
    // m ≤ 64; part has two slots for each of at most ws.blocks blocks and count one zeroed u32
    // a column tile.
    unsafe {
        k.get("gemm_skinny").launch(
            blocks,
            256,
            s,
            &mut kargs![x, wp, bias, y, part, count, m32, n32, k32, acc, f32o],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_round_up_by_a_32nd_of_the_power_of_two() {
        // Hand-checked: below 2,048 rows the step is 64; 19,136 (16 images of 1280×720) lies in
        // [16,384, 32,768), step 512; 4,784 (one such image) in [4,096, 8,192), step 128.
        assert_eq!(padded_rows(0), 64);
        assert_eq!(padded_rows(1), 64);
        assert_eq!(padded_rows(64), 64);
        assert_eq!(padded_rows(65), 128);
        assert_eq!(padded_rows(1000), 1024);
        assert_eq!(padded_rows(2048), 2048);
        assert_eq!(padded_rows(4784), 4864);
        assert_eq!(padded_rows(19136), 19456);
        for m in 1..100_000 {
            let r = padded_rows(m);
            assert!(r >= m && (r - m) * 32 <= m.max(2048), "{m} -> {r}");
            assert_eq!(padded_rows(r), r, "a padded count is its own bucket");
        }
    }

    #[test]
    fn padded_row_counts_list_every_bucket_once() {
        let all: Vec<usize> = padded_row_counts(5000).collect();
        assert_eq!(all.first(), Some(&64));
        assert_eq!(all.last(), Some(&padded_rows(5000)));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let seen: std::collections::BTreeSet<usize> = (1..=5000).map(padded_rows).collect();
        assert_eq!(all, seen.into_iter().collect::<Vec<_>>());
        // Steps of 64 up to 4,096, then 32 per octave: 64 + 32 + 32 up to 16,384.
        assert_eq!(padded_row_counts(4096).count(), 64);
        assert_eq!(padded_row_counts(16_384).count(), 128);
    }
}

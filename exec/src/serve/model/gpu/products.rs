//! The matrix products of the forward pass: cuBLASLt plans per shape (bias and residual add in
//! its epilogue) and, for one-row products, our `gemv` kernel where it was timed faster.
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

/// Which kernel runs a product of at most `GEMV_MAX_M` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallProducts {
    /// Per shape, whichever of gemv and the tuned cuBLASLt plan was faster when timed.
    Fastest,
    /// Always our gemv kernel (for comparison).
    Gemv,
    /// Always cuBLASLt (for comparison).
    CuBlasLt,
}

/// The rows a product runs at whose row count changes from step to step (the ViT's tokens
/// under dynamic resolution): `m` rounded up to a 32nd of its power of two, at least 64. A new
/// shape's first step ran 10–30 ms over its steady-state time, far more than its plan making
/// (`exec/results/2026-12-03-h200-ttft-tail/first-shapes/`; the decoder's prefill products, not
/// padded yet, still cost Qwen2.5-VL's light-load steps 6 ms each at a new token count,
/// `exec/results/2026-12-04-h200-qwen-validate/validate-qwen/steps.csv`); with the
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
    pub gemv_s: f64,
    pub cublaslt_s: f64,
}

impl ProductRace {
    pub fn gemv_wins(&self) -> bool {
        self.gemv_s < self.cublaslt_s
    }
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
    pub small: SmallProducts,
}

impl Products {
    pub fn new(gpu: &Gpu) -> Result<Products> {
        Ok(Products {
            lt: Lt::new()?,
            plans: RefCell::new(HashMap::new()),
            races: RefCell::new(HashMap::new()),
            planning_s: Cell::new(0.0),
            ws: gpu.alloc(WORKSPACE)?,
            small: SmallProducts::Fastest,
        })
    }

    /// Plans for the products of a decode step of `m` rows (`weights`: each weight with its
    /// epilogue), each the fastest on this GPU of up to 16 cuBLASLt heuristic candidates and,
    /// for m ≤ GEMV_MAX_M, of our gemv kernel (each timed from a cold L2 into scratch outputs,
    /// so nothing the step reads changes). Called before every decode step, outside graph
    /// capture (which cannot time): a plan made inside capture would get the heuristic's first
    /// guess. Nothing to do once the plans exist.
    pub fn tune(
        &self,
        gpu: &Gpu,
        k: &Kernels,
        s: &Stream,
        m: usize,
        weights: Vec<(&DTensor, Epilogue)>,
    ) -> Result<()> {
        let small = m <= GEMV_MAX_M;
        if small && self.small == SmallProducts::Gemv {
            return Ok(());
        }
        let race_gemv = small && self.small == SmallProducts::Fastest;
        let products: Vec<(&DTensor, Epilogue)> = weights
            .into_iter()
            .filter(|(w, ep)| {
                let key = (m, w.shape[0], w.shape[1], *ep);
                !self.plans.borrow().contains_key(&key)
                    || (race_gemv && !self.races.borrow().contains_key(&key))
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
            let lt_s = match self.plans.borrow_mut().entry(key) {
                Entry::Occupied(e) => time(&|| run_lt(e.get()))?,
                Entry::Vacant(v) => {
                    let mut p = self.lt.plan_with(m, n, kk, WORKSPACE, 16, ep)?;
                    let (t, _) = p.choose_fastest(|p| time(&|| run_lt(p)))?;
                    v.insert(p);
                    t
                }
            };
            if race_gemv {
                let gemv_s = time(&|| gemv(k, s, x.ptr, w, b, y.ptr, ep))?;
                let race = ProductRace {
                    gemv_s,
                    cublaslt_s: lt_s,
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
        let use_gemv = m <= GEMV_MAX_M
            && match self.small {
                SmallProducts::Gemv => true,
                SmallProducts::CuBlasLt => false,
                SmallProducts::Fastest => {
                    self.races.borrow().get(&key).is_some_and(|r| r.gemv_wins())
                }
            };
        let bias = bias.map_or(0, |b| b.ptr());
        if use_gemv {
            return gemv(k, s, x, w, bias, y, ep);
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
}

/// The product of one row X[k] through our gemv kernel, plus `bias` (0: none; else [n] bf16).
pub fn gemv(
    k: &Kernels,
    s: &Stream,
    x: u64,
    w: &DTensor,
    bias: u64,
    y: u64,
    ep: Epilogue,
) -> Result<()> {
    let (n, kk) = (w.shape[0], w.shape[1]);
    let (n32, k32) = (n as u32, kk as u32);
    let (acc, f32o, wp) = (ep.accumulate as i32, ep.out_f32 as i32, w.ptr());
    let blocks = n.div_ceil(2).div_ceil(8) as u32; // 8 warps of 2 rows per block
    // SAFETY: gemv(X, W, bias, Y, N, K, accumulate, out_f32): w is an [n, k] weight, x holds k
    // bf16, bias 0 or n bf16, and y n values of the output type (the caller's contract, as for
    // gemm); 8 warps of 2 rows a block cover the n rows.
    unsafe {
        k.get("gemv").launch(
            blocks,
            256,
            s,
            &mut kargs![x, wp, bias, y, n32, k32, acc, f32o],
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

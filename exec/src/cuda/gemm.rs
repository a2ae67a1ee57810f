//! bf16 GEMM through cuBLASLt, laid out as a PyTorch `Linear`: `Y[M,N] = X[M,K] · W[N,K]ᵀ`,
//! all row-major, fp32 accumulate. In cuBLAS's column-major terms that is
//! `Yᵀ (N×M) = op_T(W as K×N) · Xᵀ (K×M)` — the "TN" case, cuBLASLt's fastest bf16 path.

use crate::cuda::device::Stream;
use crate::cuda::libs;
use crate::error::{Error, Result};
use cudarc::cublaslt::sys::{self as lt, cublasStatus_t};
use std::ffi::c_void;

fn ckb(st: cublasStatus_t, call: impl FnOnce() -> String) -> Result<()> {
    if st == cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cublas {
            call: call(),
            status: format!("{st:?}"),
        })
    }
}

pub struct Lt {
    handle: lt::cublasLtHandle_t,
}

impl Lt {
    pub fn new() -> Result<Lt> {
        libs::ensure_cublaslt()?;
        let mut handle = std::ptr::null_mut();
        ckb(unsafe { lt::cublasLtCreate(&mut handle) }, || {
            "cublasLtCreate".into()
        })?;
        Ok(Lt { handle })
    }

    pub fn version() -> Result<usize> {
        libs::ensure_cublaslt()?;
        Ok(unsafe { lt::cublasLtGetVersion() })
    }

    /// Describe `Y[M,N] = X[M,K] · W[N,K]ᵀ` and ask cuBLASLt's heuristic for up to `max_algos`
    /// algorithms (best guess first; `Plan::choose` picks another after timing them).
    pub fn plan(
        &self,
        m: usize,
        n: usize,
        k: usize,
        workspace: usize,
        max_algos: usize,
    ) -> Result<Plan> {
        self.plan_with(m, n, k, workspace, max_algos, Epilogue::default())
    }

    /// As `plan`, with an epilogue: a bias added to every row, accumulation into Y
    /// (`Y += X·Wᵀ`: the residual add for free), f32 output.
    pub fn plan_with(
        &self,
        m: usize,
        n: usize,
        k: usize,
        workspace: usize,
        max_algos: usize,
        ep: Epilogue,
    ) -> Result<Plan> {
        use lt::cublasComputeType_t::CUBLAS_COMPUTE_32F;
        use lt::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F};
        let what = format!("GEMM M={m} N={n} K={k} {ep:?}");
        let out_type = if ep.out_f32 { CUDA_R_32F } else { CUDA_R_16BF };
        let mut p = Plan {
            m,
            n,
            k,
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algos: Vec::new(),
            chosen: 0,
            workspace,
            ep,
        };
        unsafe {
            ckb(
                lt::cublasLtMatmulDescCreate(&mut p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                || format!("cublasLtMatmulDescCreate({what})"),
            )?;
            let op_t: i32 = 1; // CUBLAS_OP_T
            ckb(
                lt::cublasLtMatmulDescSetAttribute(
                    p.desc,
                    lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                    &op_t as *const i32 as *const c_void,
                    4,
                ),
                || format!("cublasLtMatmulDescSetAttribute(TRANSA, {what})"),
            )?;
            if ep.bias {
                let e = lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                ckb(
                    lt::cublasLtMatmulDescSetAttribute(
                        p.desc,
                        lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                        &e as *const _ as *const c_void,
                        std::mem::size_of_val(&e),
                    ),
                    || format!("cublasLtMatmulDescSetAttribute(EPILOGUE, {what})"),
                )?;
            }
            // A = W viewed column-major K×N (ld K); B = X viewed K×M (ld K); C = Y viewed N×M (ld N)
            ckb(
                lt::cublasLtMatrixLayoutCreate(&mut p.a, CUDA_R_16BF, k as u64, n as u64, k as i64),
                || format!("layout A ({what})"),
            )?;
            ckb(
                lt::cublasLtMatrixLayoutCreate(&mut p.b, CUDA_R_16BF, k as u64, m as u64, k as i64),
                || format!("layout B ({what})"),
            )?;
            ckb(
                lt::cublasLtMatrixLayoutCreate(&mut p.c, out_type, n as u64, m as u64, n as i64),
                || format!("layout C ({what})"),
            )?;
            let mut pref = std::ptr::null_mut();
            ckb(lt::cublasLtMatmulPreferenceCreate(&mut pref), || {
                "cublasLtMatmulPreferenceCreate".into()
            })?;
            let ws = workspace as u64;
            let r = ckb(
                lt::cublasLtMatmulPreferenceSetAttribute(
                    pref,
                    lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &ws as *const u64 as *const c_void,
                    8,
                ),
                || "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)".into(),
            );
            let want = max_algos.clamp(1, 16);
            let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> =
                vec![std::mem::zeroed(); want];
            let mut found = 0;
            let r2 = r.and_then(|_| {
                ckb(
                    lt::cublasLtMatmulAlgoGetHeuristic(
                        self.handle,
                        p.desc,
                        p.a,
                        p.b,
                        p.c,
                        p.c,
                        pref,
                        want as i32,
                        results.as_mut_ptr(),
                        &mut found,
                    ),
                    || format!("cublasLtMatmulAlgoGetHeuristic({what})"),
                )
            });
            lt::cublasLtMatmulPreferenceDestroy(pref);
            r2?;
            if found < 1 {
                return Err(Error::Cublas {
                    call: format!("cublasLtMatmulAlgoGetHeuristic({what})"),
                    status: "no algorithm found".into(),
                });
            }
            p.algos = results
                .iter()
                .take(found as usize)
                .filter(|r| {
                    r.state == cublasStatus_t::CUBLAS_STATUS_SUCCESS && r.workspaceSize <= workspace
                })
                .map(|r| r.algo)
                .collect();
            if p.algos.is_empty() {
                return Err(Error::Cublas {
                    call: format!("cublasLtMatmulAlgoGetHeuristic({what})"),
                    status: "no usable algorithm".into(),
                });
            }
        }
        Ok(p)
    }

    /// Add to the plan's candidates the heuristic's again with their k split in 2…16 parts,
    /// where the algorithm can split and the split fits the workspace: for a decode batch's
    /// products (M ≤ 64), whose output has too few tiles to occupy every SM, the heuristic's own
    /// candidates read the weights at 45–72 % of the copy rate on an H200
    /// (exec/results/2026-12-04-h200-qwen-product-kernels/). Only for plans that are then timed
    /// (`choose_fastest`): a variant is a guess until then. Reductions in place (the output
    /// buffer, ordered by counters) or in the compute type in the workspace: both add the parts
    /// in a fixed order. Returns how many were added.
    pub fn add_split_k_variants(&self, p: &mut Plan) -> usize {
        let extra = self.split_k_variants(p);
        p.algos.extend_from_slice(&extra);
        extra.len()
    }

    fn split_k_variants(&self, p: &Plan) -> Vec<lt::cublasLtMatmulAlgo_t> {
        use lt::cublasLtMatmulAlgoCapAttributes_t as Cap;
        use lt::cublasLtMatmulAlgoConfigAttributes_t as Config;
        const SPLITS: [u32; 4] = [2, 4, 8, 16];
        // cublasLtReductionScheme_t: INPLACE = 1, COMPUTE_TYPE = 2.
        const SCHEMES: [u32; 2] = [1, 2];
        let mut out = Vec::new();
        for base in &p.algos {
            let (mut splits_ok, mut mask, mut written) = (0i32, 0u32, 0usize);
            // SAFETY: `base` is an algorithm the heuristic returned; each buffer is the size
            // passed for it.
            let known = unsafe {
                lt::cublasLtMatmulAlgoCapGetAttribute(
                    base,
                    Cap::CUBLASLT_ALGO_CAP_SPLITK_SUPPORT,
                    &mut splits_ok as *mut i32 as *mut c_void,
                    4,
                    &mut written,
                ) == cublasStatus_t::CUBLAS_STATUS_SUCCESS
                    && lt::cublasLtMatmulAlgoCapGetAttribute(
                        base,
                        Cap::CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK,
                        &mut mask as *mut u32 as *mut c_void,
                        4,
                        &mut written,
                    ) == cublasStatus_t::CUBLAS_STATUS_SUCCESS
            };
            if !known || splits_ok == 0 {
                continue;
            }
            for split in SPLITS.into_iter().filter(|&s| p.k >= 256 * s as usize) {
                for scheme in SCHEMES.into_iter().filter(|&r| mask & r != 0) {
                    let mut algo = *base;
                    // SAFETY: as above; `algo` is a copy owned here, and AlgoCheck reads the
                    // plan's descriptors, alive in `p`.
                    let usable = unsafe {
                        let mut r: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
                        lt::cublasLtMatmulAlgoConfigSetAttribute(
                            &mut algo,
                            Config::CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                            &split as *const u32 as *const c_void,
                            4,
                        ) == cublasStatus_t::CUBLAS_STATUS_SUCCESS
                            && lt::cublasLtMatmulAlgoConfigSetAttribute(
                                &mut algo,
                                Config::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                &scheme as *const u32 as *const c_void,
                                4,
                            ) == cublasStatus_t::CUBLAS_STATUS_SUCCESS
                            && lt::cublasLtMatmulAlgoCheck(
                                self.handle,
                                p.desc,
                                p.a,
                                p.b,
                                p.c,
                                p.c,
                                &algo,
                                &mut r,
                            ) == cublasStatus_t::CUBLAS_STATUS_SUCCESS
                            && r.workspaceSize <= p.workspace
                    };
                    if usable {
                        out.push(algo);
                    }
                }
            }
        }
        out
    }

    /// Queue Y = X·Wᵀ on `s`. Pointers are device addresses of bf16 data; `ws` a workspace of at
    /// least `plan.workspace` bytes. The stream's context must be current.
    pub fn run(&self, p: &Plan, x: u64, w: u64, y: u64, ws: u64, s: &Stream) -> Result<()> {
        self.run_with(p, x, w, y, 0, ws, s)
    }

    /// As `run`; `bias` is the device address of N bf16 values when the plan has a bias.
    #[allow(clippy::too_many_arguments)]
    pub fn run_with(
        &self,
        p: &Plan,
        x: u64,
        w: u64,
        y: u64,
        bias: u64,
        ws: u64,
        s: &Stream,
    ) -> Result<()> {
        let alpha = 1.0f32;
        let beta = if p.ep.accumulate { 1.0f32 } else { 0.0f32 };
        if p.ep.bias {
            let b = bias as *const c_void;
            ckb(
                unsafe {
                    lt::cublasLtMatmulDescSetAttribute(
                        p.desc,
                        lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                        &b as *const *const c_void as *const c_void,
                        std::mem::size_of::<*const c_void>(),
                    )
                },
                || "cublasLtMatmulDescSetAttribute(BIAS_POINTER)".into(),
            )?;
        }
        let algo: *const lt::cublasLtMatmulAlgo_t = &p.algos[p.chosen];
        ckb(
            unsafe {
                lt::cublasLtMatmul(
                    self.handle,
                    p.desc,
                    &alpha as *const f32 as *const c_void,
                    w as *const c_void,
                    p.a,
                    x as *const c_void,
                    p.b,
                    &beta as *const f32 as *const c_void,
                    y as *const c_void,
                    p.c,
                    y as *mut c_void,
                    p.c,
                    algo,
                    ws as *mut c_void,
                    p.workspace,
                    s.raw as lt::cudaStream_t,
                )
            },
            || {
                format!(
                    "cublasLtMatmul(M={} N={} K={}, GPU {})",
                    p.m, p.n, p.k, s.gpu
                )
            },
        )
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        unsafe {
            lt::cublasLtDestroy(self.handle);
        }
    }
}

/// What happens after the product (see `Lt::plan_with`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Epilogue {
    pub bias: bool,
    pub accumulate: bool,
    pub out_f32: bool,
}

pub struct Plan {
    pub ep: Epilogue,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    desc: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    c: lt::cublasLtMatrixLayout_t,
    algos: Vec<lt::cublasLtMatmulAlgo_t>,
    chosen: usize,
    pub workspace: usize,
}

impl Plan {
    /// How many candidate algorithms the heuristic returned.
    pub fn candidates(&self) -> usize {
        self.algos.len()
    }
    /// Parts the chosen candidate splits k into (1: not split).
    pub fn chosen_split_k(&self) -> u32 {
        let (mut split, mut written) = (1u32, 0usize);
        // SAFETY: the chosen algorithm is a valid cublasLtMatmulAlgo_t; the buffer is 4 bytes.
        let st = unsafe {
            lt::cublasLtMatmulAlgoConfigGetAttribute(
                &self.algos[self.chosen],
                lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                &mut split as *mut u32 as *mut c_void,
                4,
                &mut written,
            )
        };
        if st == cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            split.max(1)
        } else {
            1
        }
    }
    /// Use candidate `i` from now on.
    pub fn choose(&mut self, i: usize) {
        self.chosen = i.min(self.algos.len() - 1);
    }
    /// Autotune as engines do: time every candidate with `seconds` (the plan has it chosen),
    /// keep the fastest. A candidate whose run fails is not chosen; if all fail, the last
    /// error. Returns the fastest time and its candidate.
    pub fn choose_fastest(
        &mut self,
        mut seconds: impl FnMut(&Plan) -> Result<f64>,
    ) -> Result<(f64, usize)> {
        let mut best: Option<(f64, usize)> = None;
        let mut last_err = None;
        for c in 0..self.candidates() {
            self.choose(c);
            match seconds(self) {
                Ok(t) if best.is_none_or(|b| t < b.0) => best = Some((t, c)),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match (best, last_err) {
            (Some(b), _) => {
                self.choose(b.1);
                Ok(b)
            }
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("a plan has at least one candidate"),
        }
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            if !self.a.is_null() {
                lt::cublasLtMatrixLayoutDestroy(self.a);
            }
            if !self.b.is_null() {
                lt::cublasLtMatrixLayoutDestroy(self.b);
            }
            if !self.c.is_null() {
                lt::cublasLtMatrixLayoutDestroy(self.c);
            }
            if !self.desc.is_null() {
                lt::cublasLtMatmulDescDestroy(self.desc);
            }
        }
    }
}

/// bf16 bits → f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// CPU reference for `Y = X·Wᵀ` in f64 (row-major X[M,K], W[N,K]); returns ‖Y−ref‖/‖ref‖.
pub fn relative_error(x: &[u16], w: &[u16], y: &[u16], m: usize, n: usize, k: usize) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for t in 0..k {
                acc += bf16_to_f32(x[i * k + t]) as f64 * bf16_to_f32(w[j * k + t]) as f64;
            }
            let got = bf16_to_f32(y[i * n + j]) as f64;
            if got.is_nan() {
                return f64::NAN;
            }
            num += (got - acc).powi(2);
            den += acc * acc;
        }
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversion() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc000), -2.0);
    }

    #[test]
    fn reference_error_zero_for_exact() {
        // X = [[1,2]], W = [[1,0],[0,1]] → Y = [[1,2]]
        let one = 0x3f80u16;
        let two = 0x4000u16;
        let x = [one, two];
        let w = [one, 0, 0, one];
        let y = [one, two];
        assert_eq!(relative_error(&x, &w, &y, 1, 2, 2), 0.0);
        let bad = [two, two];
        assert!(relative_error(&x, &w, &bad, 1, 2, 2) > 0.1);
    }
}

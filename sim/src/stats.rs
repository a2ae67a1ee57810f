//! Streaming percentiles in bounded memory: a log-bucketed histogram, so the summary of a run of
//! any length needs no per-request storage. A quantile is the nearest-rank value's bucket,
//! reported as its geometric middle: within √γ − 1 ≈ 5.0e-4 (0.05 %) of the exact nearest-rank
//! value, relative. The request rows hold the exact latencies (`analyze` pools those).

/// The exact nearest-rank quantile of `sorted` (ascending; `q` in (0, 1]): the value at rank
/// ⌈q·n⌉. Every exact percentile hetsim reports is this one; None when there is no value.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

#[derive(Debug, Clone)]
pub struct LogHistogram {
    counts: Vec<u64>,
    n: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
}

/// Bucket ratio γ: a value is reported as the geometric middle of its bucket, within (γ−1)/2.
const GAMMA: f64 = 1.001;
/// Smallest resolved value (seconds): 1 ns. Largest: 1e7 s.
const LOW: f64 = 1e-9;
const BUCKETS: usize = 36_850; // ln(1e16) / ln(1.001)

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: Vec::new(),
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl LogHistogram {
    pub fn record(&mut self, v: f64) {
        self.record_n(v, 1);
    }

    /// Records `v` `n` times (a decode step's sequences mostly share one token gap).
    pub fn record_n(&mut self, v: f64, n: u64) {
        debug_assert!(v.is_finite() && v >= 0.0, "latency {v}");
        if n == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS + 1];
        }
        let b = if v <= LOW {
            0
        } else {
            (((v / LOW).ln() / GAMMA.ln()).floor() as usize + 1).min(BUCKETS)
        };
        self.counts[b] += n;
        self.n += n;
        self.sum += v * n as f64;
        self.sum_sq += v * v * n as f64;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The population standard deviation (numpy's `std`, as vLLM reports it).
    pub fn std(&self) -> Option<f64> {
        let mean = self.mean()?;
        Some((self.sum_sq / self.n as f64 - mean * mean).max(0.0).sqrt())
    }

    /// The q-quantile (0 ≤ q ≤ 1): the bucket holding the nearest-rank value, as its geometric
    /// middle clamped to the observed min and max (within 0.05 % of the nearest-rank value).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        self.at_rank(rank)
    }

    /// numpy's default percentile (vLLM's): linear between the order statistics around
    /// (n − 1)·q, each read from its bucket (within 0.05 %).
    pub fn interpolated(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let h = (self.n - 1) as f64 * q.clamp(0.0, 1.0);
        let lo = h.floor() as u64;
        let a = self.at_rank(lo + 1)?;
        let b = self.at_rank((lo + 2).min(self.n))?;
        Some(a + (h - lo as f64) * (b - a))
    }

    /// The value of 1-based rank `rank`, as its bucket's geometric middle.
    fn at_rank(&self, rank: u64) -> Option<f64> {
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let v = if b == 0 {
                    LOW
                } else {
                    LOW * GAMMA.powf(b as f64 - 0.5)
                };
                return Some(v.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_is_the_value_at_rank_ceil_q_n() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // ⌈0.5·4⌉ = 2, ⌈0.99·4⌉ = 4, ⌈0.01·4⌉ = 1.
        assert_eq!(nearest_rank(&v, 0.5), Some(2.0));
        assert_eq!(nearest_rank(&v, 0.99), Some(4.0));
        assert_eq!(nearest_rank(&v, 0.01), Some(1.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn interpolated_percentiles_and_std_are_numpys() {
        let mut h = LogHistogram::default();
        for v in [0.010, 0.020, 0.030, 0.040, 0.100] {
            h.record(v);
        }
        // numpy.percentile([10, 20, 30, 40, 100], [50, 99]) = [30, 97.6]; numpy.std = 31.62…
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b;
        assert!(close(h.interpolated(0.5).unwrap(), 0.030));
        assert!(close(h.interpolated(0.99).unwrap(), 0.0976));
        assert!(close(h.std().unwrap(), 0.031_622_776));
        assert_eq!(LogHistogram::default().interpolated(0.5), None);
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut h = LogHistogram::default();
        for i in 1..=10_000 {
            h.record(i as f64 * 1e-3);
        }
        for (q, exact) in [(0.5, 5.0), (0.9, 9.0), (0.99, 9.9), (1.0, 10.0)] {
            let v = h.quantile(q).unwrap();
            assert!((v - exact).abs() / exact < 6e-4, "q{q}: {v} vs {exact}");
        }
        assert!((h.quantile(0.0).unwrap() - 1e-3).abs() < 1e-6);
        assert!(LogHistogram::default().quantile(0.5).is_none());
    }

    /// The bound the schema states: every quantile within √γ − 1 of the exact nearest rank.
    #[test]
    fn quantiles_are_within_half_a_bucket_of_the_nearest_rank() {
        let bound = GAMMA.sqrt() - 1.0;
        assert!((bound - 5.0e-4).abs() < 1e-6);
        // Latencies spread over six decades, in a scrambled order.
        let mut v: Vec<f64> = (0..5000u64)
            .map(|i| 1e-4 * 10f64.powf(6.0 * ((i * 7919) % 5000) as f64 / 5000.0))
            .collect();
        let mut h = LogHistogram::default();
        for x in &v {
            h.record(*x);
        }
        v.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.9, 0.99, 0.999] {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            let exact = v[rank - 1];
            let got = h.quantile(q).unwrap();
            assert!(
                (got / exact - 1.0).abs() <= bound + 1e-12,
                "q{q}: {got} vs {exact}"
            );
        }
    }
}

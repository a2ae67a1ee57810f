//! Small statistics for timings: median of repeats, and a latency + bandwidth line fit.

/// Median of a non-empty sample (mean of the middle two for an even count). NaN for empty input.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Smallest and largest.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Least-squares fit of time = latency + bytes / bandwidth over (bytes, seconds) points.
/// Returns (latency_s, bandwidth_bytes_per_s). Bandwidth is infinite if the slope is not positive.
pub fn fit_latency_bandwidth(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (
            points.first().map(|p| p.1).unwrap_or(f64::NAN),
            f64::INFINITY,
        );
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = my - slope * mx;
    (
        intercept,
        if slope > 0.0 {
            1.0 / slope
        } else {
            f64::INFINITY
        },
    )
}

/// Number of timed repeats for an operation expected to take `expected_s`: aim for about
/// `budget_s` of timing, at least `lo` and at most `hi` repeats.
pub fn repeats_for(expected_s: f64, budget_s: f64, lo: usize, hi: usize) -> usize {
    if expected_s.is_nan() || expected_s <= 0.0 {
        return hi;
    }
    ((budget_s / expected_s).ceil() as usize).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn fit_recovers_line() {
        // 5 us latency, 100 GB/s
        let pts: Vec<(f64, f64)> = [1e3, 1e6, 1e8, 1e9]
            .iter()
            .map(|&b| (b, 5e-6 + b / 100e9))
            .collect();
        let (lat, bw) = fit_latency_bandwidth(&pts);
        assert!((lat - 5e-6).abs() < 1e-9, "{lat}");
        assert!((bw / 100e9 - 1.0).abs() < 1e-9, "{bw}");
    }

    #[test]
    fn repeats_clamped() {
        assert_eq!(repeats_for(1.0, 0.1, 3, 50), 3);
        assert_eq!(repeats_for(1e-6, 0.1, 3, 50), 50);
        assert_eq!(repeats_for(0.01, 0.1, 3, 50), 10);
        assert_eq!(repeats_for(0.0, 0.1, 3, 50), 50);
    }
}

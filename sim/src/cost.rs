//! Dollars: capex (purchase price amortised over a lifetime, plus energy) or rental ($/GPU-hour).
//! Prices default to the catalog's (sources in `catalog/gpu.rs`) and can be overridden per GPU.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bounds::Bound;
use crate::catalog::{GpuSpec, resolve_gpu};
use crate::error::InputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PricingMode {
    #[default]
    Capex,
    Rental,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingSpec {
    pub mode: PricingMode,
    /// Years over which the purchase price is spread.
    pub lifetime_years: f64,
    pub usd_per_kwh: f64,
    /// Power usage effectiveness of the data centre (cooling, conversion).
    pub pue: f64,
    /// Fraction of the GPU's TDP it draws on average.
    pub power_fraction: f64,
    /// Purchase price per GPU, overriding the catalog.
    pub gpu_price_usd: BTreeMap<String, f64>,
    /// Rental price per GPU-hour, overriding the catalog.
    pub gpu_usd_per_hour: BTreeMap<String, f64>,
    /// Fraction added to the purchase price of a GPU on an NVLink board (the HGX baseboard and
    /// NVSwitches a PCIe box does not need).
    pub nvlink_premium: f64,
}

impl Default for PricingSpec {
    fn default() -> Self {
        PricingSpec {
            mode: PricingMode::Capex,
            lifetime_years: 3.0,
            usd_per_kwh: 0.12,
            pue: 1.3,
            power_fraction: 1.0,
            gpu_price_usd: BTreeMap::new(),
            gpu_usd_per_hour: BTreeMap::new(),
            nvlink_premium: 0.0,
        }
    }
}

const SECONDS_PER_YEAR: f64 = 365.25 * 86_400.0;

// Ranges of the pricing fields: wide enough for any real purchase, narrow enough that a typo
// (a negative premium, a price of 1e308) is refused rather than ranked.
const LIFETIME_YEARS: Bound = Bound::above(0.0, 100.0, "years");
const PUE: Bound = Bound::closed(1.0, 10.0, "");
const USD_PER_KWH: Bound = Bound::closed(0.0, 100.0, "USD/kWh");
const POWER_FRACTION: Bound = Bound::closed(0.0, 2.0, "of TDP");
const NVLINK_PREMIUM: Bound = Bound::closed(0.0, 10.0, "of the GPU price");
const GPU_PRICE_USD: Bound = Bound::closed(0.0, 1e8, "USD");
const GPU_USD_PER_HOUR: Bound = Bound::closed(0.0, 1e5, "USD/h");

impl PricingSpec {
    pub fn validate(&self) -> Result<(), InputError> {
        for (field, v, bound) in [
            (
                "pricing.lifetime_years",
                self.lifetime_years,
                LIFETIME_YEARS,
            ),
            ("pricing.pue", self.pue, PUE),
            ("pricing.usd_per_kwh", self.usd_per_kwh, USD_PER_KWH),
            (
                "pricing.power_fraction",
                self.power_fraction,
                POWER_FRACTION,
            ),
            (
                "pricing.nvlink_premium",
                self.nvlink_premium,
                NVLINK_PREMIUM,
            ),
        ] {
            bound.check(field, v)?;
        }
        for (table, map, bound) in [
            ("gpu_price_usd", &self.gpu_price_usd, GPU_PRICE_USD),
            ("gpu_usd_per_hour", &self.gpu_usd_per_hour, GPU_USD_PER_HOUR),
        ] {
            for (gpu, v) in map {
                resolve_gpu(gpu).map_err(|e| e.context(format!("pricing.{table}")))?;
                bound.check(&format!("pricing.{table}.{gpu}"), *v)?;
            }
        }
        Ok(())
    }

    fn override_for(map: &BTreeMap<String, f64>, gpu: &GpuSpec) -> Option<f64> {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(gpu.name))
            .map(|(_, v)| *v)
    }

    /// Dollars per second of owning (or renting) one GPU, or an error naming the missing price.
    pub fn usd_per_second(&self, gpu: &GpuSpec, on_nvlink: bool) -> Result<f64, InputError> {
        match self.mode {
            PricingMode::Capex => {
                let price = self.purchase_usd(gpu, on_nvlink)?;
                let energy =
                    gpu.power_w * self.power_fraction / 1000.0 * self.pue * self.usd_per_kwh
                        / 3600.0;
                Ok(price / (self.lifetime_years * SECONDS_PER_YEAR) + energy)
            }
            PricingMode::Rental => {
                let hourly = Self::override_for(&self.gpu_usd_per_hour, gpu).or(gpu.cloud_usd_per_hour.map(|q| q.usd)).ok_or_else(|| {
                    InputError::new(format!(
                        "no rental price for {} in the catalog: set `pricing.gpu_usd_per_hour: {{{}: <USD>}}` or use `mode: capex`",
                        gpu.name, gpu.name
                    ))
                })?;
                Ok(hourly / 3600.0)
            }
        }
    }

    /// Purchase price of one GPU, with the NVLink board premium where it sits on one.
    pub fn purchase_usd(&self, gpu: &GpuSpec, on_nvlink: bool) -> Result<f64, InputError> {
        let price = Self::override_for(&self.gpu_price_usd, gpu).or(gpu.price_usd.map(|q| q.usd)).ok_or_else(|| {
            InputError::new(format!(
                "no purchase price for {} in the catalog: set `pricing.gpu_price_usd: {{{}: <USD>}}` or use `mode: rental`",
                gpu.name, gpu.name
            ))
        })?;
        Ok(price
            * if on_nvlink {
                1.0 + self.nvlink_premium
            } else {
                1.0
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gpu_by_name;

    #[test]
    fn capex_is_amortised_price_plus_energy() {
        let p = PricingSpec::default();
        let a100 = gpu_by_name("A100-SXM-80GB").unwrap();
        // $15,000 over 3 years + 400 W · 1.3 PUE · $0.12/kWh.
        let expect = 15_000.0 / (3.0 * SECONDS_PER_YEAR) + 0.4 * 1.3 * 0.12 / 3600.0;
        assert!((p.usd_per_second(a100, false).unwrap() - expect).abs() < 1e-12);
        let hourly = p.usd_per_second(a100, false).unwrap() * 3600.0;
        assert!((hourly - 0.633).abs() < 0.001, "{hourly} $/h");
    }

    #[test]
    fn overrides_and_missing_prices() {
        let mut p = PricingSpec {
            mode: PricingMode::Rental,
            ..PricingSpec::default()
        };
        // No source gave the T4 an hourly price.
        let t4 = gpu_by_name("T4").unwrap();
        let e = p.usd_per_second(t4, false).unwrap_err().to_string();
        assert!(e.contains("gpu_usd_per_hour") && e.contains("T4"), "{e}");
        // An override wins over the catalog's $4.54/h.
        let h200 = gpu_by_name("H200-SXM").unwrap();
        p.gpu_usd_per_hour.insert("h200-sxm".into(), 3.6);
        assert!((p.usd_per_second(h200, false).unwrap() - 0.001).abs() < 1e-12);
        let capex = PricingSpec {
            nvlink_premium: 0.25,
            ..PricingSpec::default()
        };
        assert_eq!(capex.purchase_usd(h200, true).unwrap(), 40_000.0);
        assert_eq!(capex.purchase_usd(h200, false).unwrap(), 32_000.0);
    }
}

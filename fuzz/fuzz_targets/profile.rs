//! Hardware profiles: validated or refused by field, and an accepted profile's phase tables
//! looked up for every dtype.
#![no_main]

use hetsim_sim::catalog::Dtype;
use hetsim_sim::profile::HardwareProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = HardwareProfile::from_yaml(text) {
        for t in &p.phases {
            for d in Dtype::ALL {
                let _ = p.phases(&t.model, &t.catalog_gpu, d);
            }
        }
    }
});

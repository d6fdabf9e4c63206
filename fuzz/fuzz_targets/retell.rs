#![no_main]

use callgate::canonical::Vendor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| callgate_fuzz::check(Vendor::Retell, data));

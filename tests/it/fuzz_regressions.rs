//! Every fuzz corpus entry and every input a fuzzer ever crashed on, checked against the same
//! property the fuzz targets check (see `fuzz/src/lib.rs`), on the stable toolchain.

#[path = "../../fuzz/src/lib.rs"]
mod property;

use std::path::PathBuf;

use callgate::canonical::Vendor;

#[test]
fn fuzz_corpora_and_crash_regressions_hold_the_property() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for vendor in Vendor::ALL {
        for dir in
            [root.join("fuzz/corpus").join(vendor.as_str()), root.join("tests/fixtures/fuzz").join(vendor.as_str())]
        {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| property::check(vendor, &data));
                assert!(result.is_ok(), "{} breaks the property", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 50, "only {checked} inputs found");
}

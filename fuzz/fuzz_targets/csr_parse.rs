//! `rackboot::fuzzing::csr`: see its doc comment for what is driven.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rackboot::fuzzing::csr(data);
});

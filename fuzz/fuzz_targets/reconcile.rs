#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iris_worker::fuzzing::fuzz_reconcile(data));

#![no_main]

// Random sequences of backup, forget, prune and check under injected faults, against a model
// (src/ops/model_fuzz.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::ops::model_fuzz::model(data));

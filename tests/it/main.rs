//! One integration-test binary (faster to link than one per file).

mod cli;
mod e2e;
mod edges;
mod fuzz_regressions;
mod golden;
mod reliability;
mod security;
mod support;

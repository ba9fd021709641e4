//! Shared helpers for the so8t-dashboard integration tests (`mod support;` in a test file).

pub mod webdriver;

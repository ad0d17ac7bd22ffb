//! The one integration-test binary (ripgrep style): each area is a module.

// Test helpers panic on setup failures by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod cli;
mod cluster;
mod eventd;
mod golden;
mod membership;
mod mutex;
mod shell;
mod takeover;
mod tidy;

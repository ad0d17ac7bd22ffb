//! The one integration-test binary (ripgrep style): each area is a module.

// Test helpers panic on setup failures by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod calls;
mod cli;
mod cluster;
mod dbstats;
mod eventd;
mod fetchlock;
mod golden;
mod install;
mod ipalloc;
mod leader;
mod membership;
mod mixed;
mod mutex;
mod netns;
mod ptrans;
mod readonly;
mod reclock;
mod recovery;
mod recovery_helper;
mod shell;
mod smbd;
mod takeover;
mod takeover_helper;
mod tidy;
mod traverse;
mod vacuum;

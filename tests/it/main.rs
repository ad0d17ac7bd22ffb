//! The one integration-test binary (ripgrep style): each area is a module.

mod tidy;

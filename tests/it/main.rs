//! payrun's integration tests: one binary, the real `payrun` executable on fixture jobs.

mod plan;
mod support;
mod validate;

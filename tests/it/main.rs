//! payrun's integration tests: one binary, the real `payrun` executable on fixture jobs.

mod export;
mod faults;
mod finhub;
mod generate;
mod hardening;
mod never_twice;
mod plan;
mod report;
mod run;
mod sandbox;
mod sandbox_support;
mod support;
mod validate;
mod verdict;

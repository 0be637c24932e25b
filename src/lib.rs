//! payrun: declarative batch jobs against payment APIs.
//!
//! A YAML job file says what to do (create contacts, submit KYC, pay out from CSV rows);
//! payrun validates every row, plans the work into a SQLite state database, executes it
//! with rate limits, retries and crash-safe idempotency, and reports on every row.

pub mod cli;
pub mod commands;
pub mod exec;
pub mod exit;
pub mod input;
pub mod job;
pub mod plan;
pub mod private;
pub mod provider;
pub mod redact;
pub mod report;
pub mod sandbox;
pub mod state;
pub mod template;
pub mod validate;

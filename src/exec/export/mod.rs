//! Export steps: pull every record of a resource created in a window, page by page, into a
//! file — under the same pacer and retries as a run.
//!
//! - The window is cut into pieces no longer than the endpoint allows (payouts: a year);
//!   neighbouring pieces share their boundary instant, so nothing falls between them.
//! - A page loop stops on an empty page, or on a short page that the metadata does not
//!   contradict. Metadata that says "more" is followed (an extra empty page costs one
//!   request); a full page is followed even when the metadata says it was the last one.
//! - Records are de-duplicated by id (new records arriving mid-export shift pages).
//! - The file is written as `<path>.partial`, synced, then renamed over `<path>`; only then
//!   is the export recorded complete, which moves the step's `last_run` watermark.

use super::{Client, Ctx, RunError};
use crate::job::Job;
use crate::job::export::{Export, Format, Resource};
use crate::provider::error::CallError;
use crate::state::ExportState;
use crate::state::exports::{self, ExportRecord};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

mod columns;
mod pages;
mod sink;
#[cfg(test)]
mod tests;

use columns::*;
use pages::*;
pub(crate) use pages::{More, parse_page, windows};
use sink::*;

/// Runs the job's exports in order; returns whether every one completed.
pub async fn run_all(job: &Job, ctx: &Ctx, run_id: i64) -> Result<bool, RunError> {
    // One `now` for the whole run: exports of one run share their window's end.
    let now = whole_second(Utc::now());
    let mut all_ok = true;
    for export in &job.exports {
        if ctx.stopping() {
            break;
        }
        all_ok &= run_one(export, ctx, run_id, now).await?;
    }
    Ok(all_ok)
}

/// Why an export stopped short.
enum Stop {
    Failed(String),
    Interrupted,
}

struct Tally {
    rows: u64,
    pages: u64,
    duplicates: u64,
}

async fn run_one(
    export: &Export,
    ctx: &Ctx,
    run_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, RunError> {
    let (plan_id, step) = (ctx.plan_id, export.id.clone());
    let mark = ctx
        .db
        .read(move |c| exports::watermark(c, plan_id, &step))
        .await?
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut record = ExportRecord {
        step: export.id.clone(),
        resource: export.resource.as_str().to_string(),
        from_at: String::new(),
        to_at: String::new(),
        state: ExportState::Running,
        rows: 0,
        pages: 0,
        duplicates: 0,
        path: export.path.display().to_string(),
        error: None,
    };
    let window = export
        .from
        .resolve(now, mark)
        .and_then(|f| Ok((whole_second(f), whole_second(export.to.resolve(now, mark)?))))
        .and_then(|(f, t)| {
            if f > t {
                Err(format!("the window is empty: from {f} is after to {t}"))
            } else {
                Ok((f, t))
            }
        });
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if let Ok((f, t)) = &window {
        record.from_at = stamp(*f);
        record.to_at = stamp(*t);
    }
    let started = record.clone();
    ctx.db
        .write(move |c| exports::start(c, run_id, plan_id, &started))
        .await?;
    tracing::info!(step = %export.id, resource = export.resource.as_str(), from = %record.from_at, to = %record.to_at, "export started");
    ctx.progress.start(&export.id, 0);
    let result = match window {
        Err(e) => Err(Stop::Failed(e)),
        Ok((from, to)) => pull(export, ctx, from, to).await,
    };
    ctx.progress.finish();
    let ok = match result {
        Ok(t) => {
            record.state = ExportState::Completed;
            (record.rows, record.pages, record.duplicates) = (t.rows, t.pages, t.duplicates);
            tracing::info!(step = %export.id, rows = t.rows, pages = t.pages, duplicates = t.duplicates, path = %export.path.display(), "export finished");
            true
        }
        Err(Stop::Failed(e)) => {
            tracing::error!(step = %export.id, "export failed: {e}");
            record.state = ExportState::Failed;
            record.error = Some(e);
            false
        }
        Err(Stop::Interrupted) => {
            tracing::warn!(step = %export.id, "export interrupted; the next run does it again");
            record.state = ExportState::Interrupted;
            false
        }
    };
    ctx.db
        .write(move |c| exports::finish(c, run_id, &record))
        .await?;
    Ok(ok)
}

/// Pulls every page of every window into the partial file, then moves it into place.
async fn pull(
    export: &Export,
    ctx: &Ctx,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Tally, Stop> {
    let ep = endpoint(export.resource);
    let partial = partial_path(&export.path);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Stop::Failed(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = export.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let mut sink = Sink::open(&partial, export.format, export.resource)
        .map_err(|e| io("write", &partial, e))?;
    let outcome = pull_pages(export, ctx, &ep, from, to, &mut sink).await;
    let tally = match outcome {
        Ok(t) => t,
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    sink.close().map_err(|e| io("write", &partial, e))?;
    std::fs::rename(&partial, &export.path)
        .map_err(|e| io("rename into place", &export.path, e))?;
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = export.path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(tally)
}

async fn pull_pages(
    export: &Export,
    ctx: &Ctx,
    ep: &Endpoint,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sink: &mut Sink,
) -> Result<Tally, Stop> {
    let fmt = |t: DateTime<Utc>| {
        let s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        if ep.zulu { s + "Z" } else { s }
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut tally = Tally {
        rows: 0,
        pages: 0,
        duplicates: 0,
    };
    // FinHub's customers come by status: one pass per status asked for (all by default).
    let slices: Vec<(DateTime<Utc>, DateTime<Utc>, Option<&str>)> =
        if export.resource == Resource::CustomersByStatus {
            let only = export.filter.iter().find(|(k, _)| k == "status");
            crate::provider::finhub::CUSTOMER_STATUSES
                .iter()
                .copied()
                .filter(|s| only.is_none_or(|(_, v)| v == s))
                .map(|s| (from, to, Some(s)))
                .collect()
        } else {
            windows(from, to, ep.max_window)
                .into_iter()
                .map(|(f, t)| (f, t, None))
                .collect()
        };
    for (w_from, w_to, status) in slices {
        let mut page: u64 = 1;
        let mut longest: u64 = 0;
        let mut stale_pages = 0;
        loop {
            if ctx.stopping() {
                return Err(Stop::Interrupted);
            }
            let mut query: Vec<(&str, String)> = vec![
                (ep.from_key, fmt(w_from)),
                (ep.to_key, fmt(w_to)),
                ("page", page.to_string()),
            ];
            if let Some(k) = ep.size_key {
                query.push((k, PAGE_SIZE.to_string()));
            }
            for (k, v) in &export.filter {
                query.push((k.as_str(), v.clone()));
            }
            let p = match (status, &ctx.client) {
                (Some(status), Client::FinHub(fh)) => {
                    let reply =
                        super::protocol::idempotent(ctx, || fh.by_status(status, page, PAGE_SIZE))
                            .await
                            .map_err(|e| Stop::Failed(call_failure(&e, page)))?;
                    parse_customers_page(reply, page)
                }
                (_, Client::HelloClever(hc)) => {
                    let reply = super::protocol::idempotent(ctx, || hc.list_page(ep.path, &query))
                        .await
                        .map_err(|e| Stop::Failed(call_failure(&e, page)))?;
                    parse_page(reply, page)
                }
                // The job's resources are its provider's (checked when it loads).
                (None, Client::FinHub(_)) => {
                    return Err(Stop::Failed(format!(
                        "{} is not a FinHub resource",
                        export.resource.as_str()
                    )));
                }
            }
            .map_err(|e| Stop::Failed(format!("page {page}: {e}")))?;
            tally.pages += 1;
            if page == 1
                && let Some(total) = p.total
            {
                ctx.progress.set_total(tally.rows + total);
            }
            let n = p.records.len() as u64;
            longest = longest.max(n);
            let mut fresh = 0;
            for mut r in p.records {
                if let Some(id) = id_of(&r, ep.id_key)
                    && !seen.insert(id)
                {
                    tally.duplicates += 1;
                    continue;
                }
                redact(&mut r);
                sink.write(&r, ep).map_err(|e| {
                    Stop::Failed(format!("cannot write {}: {e}", export.path.display()))
                })?;
                fresh += 1;
            }
            tally.rows += fresh;
            ctx.tick(fresh);
            if n == 0 {
                break;
            }
            stale_pages = if fresh == 0 { stale_pages + 1 } else { 0 };
            if stale_pages >= 3 {
                return Err(Stop::Failed(format!(
                    "the provider returned only records already seen on pages {}..={page}; \
                     it may be ignoring the page number",
                    page - 2
                )));
            }
            let full = n >= p.size.or(ep.size_key.map(|_| PAGE_SIZE)).unwrap_or(longest);
            if p.more == More::Yes || full {
                page += 1;
            } else {
                break;
            }
        }
    }
    Ok(tally)
}

fn call_failure(e: &CallError, page: u64) -> String {
    let what = match e {
        CallError::Status {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        other => other.to_string(),
    };
    crate::redact::scrub(&format!("page {page}: {what}"))
}

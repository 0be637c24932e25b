//! Export steps: pull every record of a resource created in a window, page by page, into a
//! file — under the same pacer and retries as a run.
//!
//! - The window is cut into pieces no longer than the endpoint allows (payouts: a year);
//!   neighbouring pieces share their boundary instant, so nothing falls between them.
//! - A page loop stops on an empty page, or on a short page that the metadata does not
//!   contradict. Metadata that says "more" is followed (an extra empty page costs one
//!   request); a full page is followed even when the metadata says it was the last one.
//! - Records are de-duplicated by id (new records arriving mid-export shift pages).
//! - Once a page says how many there are (a total, or a page count), the pages up to the
//!   last are fetched `limits.concurrency` at a time (under the rate limit), and taken in
//!   page order. A listing whose total changes meanwhile may have moved a record from a page
//!   not read yet to one read already: its window is then read again page by page (records
//!   already written are not written again). A listing without totals is read page by page.
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
        all_ok &= run_one(export, ctx, run_id, (now, job.limits.concurrency)).await?;
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
    (now, concurrency): (DateTime<Utc>, u32),
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
        Ok((from, to)) => pull(export, ctx, (from, to), concurrency).await,
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
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    concurrency: u32,
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
    let outcome = pull_pages(export, ctx, &ep, (from, to), concurrency, &mut sink).await;
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
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    concurrency: u32,
    sink: &mut Sink,
) -> Result<Tally, Stop> {
    let mut read = Reading {
        export,
        ctx,
        ep,
        sink,
        seen: HashSet::new(),
        tally: Tally {
            rows: 0,
            pages: 0,
            duplicates: 0,
        },
    };
    // FinHub's customers come by status: one pass per status asked for (all by default).
    let slices: Vec<Slice> = if export.resource == Resource::CustomersByStatus {
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
    for slice in slices {
        let shifted = read.slice(slice, concurrency.max(1), false).await?;
        if shifted && concurrency > 1 {
            tracing::info!(
                step = %export.id,
                "the listing changed while its pages were read at once: reading its window again, page by page"
            );
            read.slice(slice, 1, true).await?;
        }
    }
    Ok(read.tally)
}

/// A window of a pull, and the customer status it lists (FinHub).
type Slice<'a> = (DateTime<Utc>, DateTime<Utc>, Option<&'a str>);

/// One export's pull under way: where it writes, what it has written.
struct Reading<'a, 's> {
    export: &'a Export,
    ctx: &'a Ctx,
    ep: &'a Endpoint,
    sink: &'s mut Sink,
    /// The ids written so far.
    seen: HashSet<String>,
    tally: Tally,
}

impl Reading<'_, '_> {
    /// Reads a slice's pages in order, up to `ahead` at once where a page has said how many
    /// there are, writing each record not written yet. `again`: a second reading of the
    /// slice (its records seen before are neither duplicates nor a sign of a stuck listing).
    /// Returns whether the listing's total changed while it was read.
    async fn slice(&mut self, slice: Slice<'_>, ahead: u32, again: bool) -> Result<bool, Stop> {
        let (ctx, ep, export) = (self.ctx, self.ep, self.export);
        let mut pending = futures_util::stream::FuturesOrdered::new();
        pending.push_back(fetch((ctx, ep, export), slice, 1));
        let (mut page, mut issued) = (1u64, 1u64);
        let (mut longest, mut stale_pages) = (0u64, 0);
        let mut first_total: Option<u64> = None;
        let mut shifted = false;
        loop {
            if self.ctx.stopping() {
                return Err(Stop::Interrupted);
            }
            let p = futures_util::StreamExt::next(&mut pending)
                .await
                .expect("the page being read was asked for")?;
            self.tally.pages += 1;
            match (first_total, p.total) {
                (None, Some(t)) => first_total = Some(t),
                (Some(a), Some(b)) if a != b => shifted = true,
                _ => {}
            }
            if page == 1
                && !again
                && let Some(total) = p.total
            {
                self.ctx.progress.set_total(self.tally.rows + total);
            }
            let last = last_page(&p, self.ep);
            let n = p.records.len() as u64;
            longest = longest.max(n);
            let size = p.size;
            let more = p.more;
            let fresh = self.write(p.records, again)?;
            if n == 0 {
                break;
            }
            stale_pages = if fresh == 0 && !again {
                stale_pages + 1
            } else {
                0
            };
            if stale_pages >= 3 {
                return Err(Stop::Failed(format!(
                    "the provider returned only records already seen on pages {}..={page}; \
                     it may be ignoring the page number",
                    page - 2
                )));
            }
            let full = n
                >= size
                    .or(self.ep.size_key.map(|_| PAGE_SIZE))
                    .unwrap_or(longest);
            if more != More::Yes && !full {
                break;
            }
            page += 1;
            // The next page, and as many after it as the known last page and `ahead` allow
            // (without a known last page, one at a time: pages past the end cost requests).
            let horizon = match last {
                Some(last) => (page + u64::from(ahead) - 1).min(last.max(page)),
                None => page,
            };
            while issued < horizon {
                issued += 1;
                pending.push_back(fetch((ctx, ep, export), slice, issued));
            }
        }
        Ok(shifted && ahead > 1)
    }

    /// Writes a page's records not written yet; returns how many it wrote.
    fn write(&mut self, records: Vec<Value>, again: bool) -> Result<u64, Stop> {
        let mut fresh = 0;
        for mut r in records {
            if let Some(id) = id_of(&r, self.ep.id_key)
                && !self.seen.insert(id)
            {
                if !again {
                    self.tally.duplicates += 1;
                }
                continue;
            }
            redact(&mut r);
            self.sink.write(&r, self.ep).map_err(|e| {
                Stop::Failed(format!("cannot write {}: {e}", self.export.path.display()))
            })?;
            fresh += 1;
        }
        self.tally.rows += fresh;
        self.ctx.tick(fresh);
        Ok(fresh)
    }
}

/// Asks for page `page` of `slice` (under the pacer: the rate limit and the requests in
/// flight are the run's).
fn fetch<'a>(
    (ctx, ep, export): (&'a Ctx, &'a Endpoint, &'a Export),
    (w_from, w_to, status): Slice<'_>,
    page: u64,
) -> impl std::future::Future<Output = Result<Page, Stop>> + use<'a> {
    let status = status.map(str::to_string);
    async move {
        let fmt = |t: DateTime<Utc>| {
            let s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            if ep.zulu { s + "Z" } else { s }
        };
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
        match (status.as_deref(), &ctx.client) {
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
        .map_err(|e| Stop::Failed(format!("page {page}: {e}")))
    }
}

/// The last page, as far as a page's metadata tells: its page count, or its total over its
/// page size (the larger, when both are there).
fn last_page(p: &Page, ep: &Endpoint) -> Option<u64> {
    let size = p.size.or(ep.size_key.map(|_| PAGE_SIZE)).filter(|s| *s > 0);
    let by_total = p.total.zip(size).map(|(t, s)| t.div_ceil(s));
    by_total.max(p.pages)
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

//! A run and a reconcile: the steps in order, the exports, the run recorded as finished.

use super::*;
use crate::exit::Ended;

/// Refreshes what the provider holds for everything sent — payout batches and their
/// transactions (those waiting for funds too), KYC not yet decided — records it, checks
/// that each payout external id is paid once, and returns what changed. It takes the
/// lock and is recorded as a run (so its reports show the refreshed state).
///
/// With `only_run`, only what that run sent first (by the time of its first attempt).
pub async fn reconcile(
    job: &Job,
    opts: RunOptions,
    only_run: Option<i64>,
) -> Result<(RunReport, Vec<Change>), RunError> {
    let (ctx, db, plan_id, run_id) = open(job, &opts, false).await?;
    let span = match only_run {
        None => None,
        Some(id) => {
            let found = db.read(move |c| work::run_span(c, plan_id, id)).await?;
            match found {
                Some(span) => Some(span),
                None => {
                    let stats = work::RunStats::default();
                    db.write(move |c| {
                        work::finish_run(c, plan_id, run_id, Ended::InvalidInput, &stats)
                    })
                    .await?;
                    return Err(RunError::Config(format!(
                        "'{}' scope '{}' has no run {id}",
                        job.name, job.scope
                    )));
                }
            }
        }
    };
    // Whether something first sent at `at` belongs to the run asked about.
    let in_span = |at: &Option<String>| match (&span, at) {
        (None, _) => true,
        (Some((from, to)), Some(at)) => at >= from && at <= to,
        (Some(_), None) => false,
    };
    let mut changes = Vec::new();
    let result: Result<(), RunError> = async {
        for step in &job.steps {
            let step_id = step.id.clone();
            let found = match step.kind {
                StepKind::Payout if let Client::HelloClever(hc) = &ctx.client => {
                    let batches = ctx
                        .batches_in(&step_id, &[BatchState::Sent, BatchState::Completed])
                        .await?;
                    let mut found = Vec::new();
                    for b in batches.into_iter().filter(|b| in_span(&b.first_attempt_at)) {
                        if let Some(uuid) = b.provider_ref.clone()
                            && let Some((_, mut c)) =
                                payout::refresh_batch(&ctx, hc, &b, &uuid).await?
                        {
                            found.append(&mut c);
                        }
                    }
                    // Whatever run sent them: is each external id paid once?
                    payout::check_duplicates(&ctx, hc, &step.id).await?;
                    found
                }
                StepKind::Kyc if let Client::HelloClever(hc) = &ctx.client => {
                    let items = ctx
                        .items_in(&step_id, &[ItemState::Succeeded, ItemState::Blocked])
                        .await?;
                    let mut found = Vec::new();
                    for item in items
                        .iter()
                        .filter(|i| in_span(&i.first_attempt_at))
                        .filter(|i| {
                            i.provider_status
                                .as_deref()
                                .is_some_and(|s| !matches!(s, "approved" | "rejected" | "failed"))
                        })
                    {
                        let timeout = step
                            .wait
                            .as_ref()
                            .map_or(std::time::Duration::ZERO, |w| w.timeout);
                        if let Some(c) = kyc::refresh(&ctx, hc, item, true, timeout).await? {
                            found.push(c);
                        }
                    }
                    found
                }
                StepKind::Payin if let Client::HelloClever(hc) = &ctx.client => {
                    let keep = |i: &WorkItem| in_span(&i.first_attempt_at);
                    payin::follow_changes(&ctx, hc, &step_id, None, keep)
                        .await?
                        .1
                }
                // Nothing of these changes at FinHub on its own.
                _ => Vec::new(),
            };
            changes.extend(found.into_iter().map(|c| Change {
                step: step.id.clone(),
                ..c
            }));
        }
        // Outcomes are queued without waiting: all of them are committed here.
        ctx.db.settled().await?;
        Ok(())
    }
    .await;
    let ended = match &result {
        Ok(()) => Ended::Done,
        Err(_) => Ended::Fatal,
    };
    let stats = ctx.pacer.stats.snapshot();
    let recorded = stats.clone();
    let (exit_code, counts) = db
        .write(move |c| work::finish_run(c, plan_id, run_id, ended, &recorded))
        .await?;
    ctx.release();
    result?;
    let duplicates = db.read(move |c| work::duplicates_of(c, plan_id)).await?;
    Ok((
        RunReport {
            run_id,
            exit_code,
            counts,
            stats,
            exports: Vec::new(),
            report: None,
            duplicates,
            approval: None,
        },
        changes,
    ))
}

/// Plans the job and runs it: takes the plan's lock (exit 3 when held), plans under it,
/// executes, records the run. Row problems found while planning go to `on_error`.
pub async fn run(
    job: &Job,
    opts: RunOptions,
    on_error: &mut (dyn FnMut(crate::input::InputError) + Send),
) -> Result<RunReport, RunError> {
    let (ctx, db, plan_id, run_id) = open(job, &opts, true).await?;
    tracing::info!(run = run_id, job = %job.name, scope = %job.scope, "run started");
    // Off a terminal, a working step says how far it is every `progress_every`.
    let _lines = (!ctx.progress.has_bars()).then(|| {
        let (ctx, every) = (Arc::downgrade(&ctx), opts.progress_every);
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ctx) = ctx.upgrade() else { return };
                if let Some(line) = ctx.progress.line() {
                    tracing::info!("{line}");
                }
            }
        }))
    });
    let mut approval = None;
    // Planning happens under the lock: no other run can be sending while items change.
    let planned = tokio::task::block_in_place(|| {
        crate::plan::plan_unless_stopped(job, &opts.state_path, &opts.plan, on_error, &opts.stop)
    });
    let ended = match planned {
        Err(crate::plan::PlanError::Invalid(_) | crate::plan::PlanError::Input(_)) => {
            Ended::InvalidInput
        }
        Err(crate::plan::PlanError::Stopped) => {
            tracing::warn!("stopped while planning: nothing was planned or sent");
            Ended::Interrupted
        }
        Err(crate::plan::PlanError::State(e)) => {
            let why = e.to_string();
            let _ = db
                .write(move |c| {
                    work::finish_fatal(c, plan_id, run_id, &work::RunStats::default(), &why)
                })
                .await;
            return Err(e.into());
        }
        Ok(planned) => match send_planned(job, &ctx, &opts, &planned.counts, &mut approval).await {
            Ok(ended) => ended,
            Err(e) => {
                let (stats, why) = (ctx.pacer.stats.snapshot(), e.to_string());
                let _ = db
                    .write(move |c| work::finish_fatal(c, plan_id, run_id, &stats, &why))
                    .await;
                return Err(e);
            }
        },
    };
    let stats = ctx.pacer.stats.snapshot();
    let recorded = stats.clone();
    let (exit_code, counts) = db
        .write(move |c| work::finish_run(c, plan_id, run_id, ended, &recorded))
        .await?;
    ctx.release();
    tracing::info!(
        run = run_id,
        exit_code,
        requests = stats.requests,
        retries = stats.retries,
        rate_limited = stats.rate_limited,
        in_doubt_resolved = stats.in_doubt_resolved,
        state_commits = db.commits(),
        state_round_trips = crate::state::pg_round_trips(),
        "run finished"
    );
    let exports = db
        .read(move |c| crate::state::exports::of_run(c, run_id))
        .await?;
    let (names, steps, source, approval_of) = (
        (job.name.clone(), job.scope.clone()),
        job.steps.iter().map(|s| (s.id.clone(), s.kind)).collect(),
        db.path().to_path_buf(),
        job.approval.clone(),
    );
    let report = db
        .read(move |c| {
            crate::report::Report::load_of(
                c,
                &source,
                (&names.0, &names.1),
                (steps, approval_of.as_ref()),
                Some(run_id),
            )
        })
        .await
        .ok();
    let duplicates = report
        .as_ref()
        .map(|r| r.duplicates.clone())
        .unwrap_or_default();
    Ok(RunReport {
        run_id,
        exit_code,
        counts,
        stats,
        exports,
        report,
        duplicates,
        approval,
    })
}

/// Sends what was planned, when the guard and the approvals let it (`approval`: where the
/// plan's approvals stand, for the run's report).
async fn send_planned(
    job: &Job,
    ctx: &Arc<Ctx>,
    opts: &RunOptions,
    planned: &crate::state::PlanCounts,
    approval: &mut Option<crate::plan::approval::Standing>,
) -> Result<Ended, RunError> {
    let go = before_sending(job, ctx, opts).await?;
    if let Go::Refused = go {
        return Ok(Ended::InvalidInput);
    }
    if let Go::Payouts(Some(s)) | Go::Awaiting(s, _) = &go {
        *approval = Some(s.clone());
    }
    execute_all(job, ctx, opts.retry_failed, ctx.run_id, planned, &go).await
}

/// What a planned run may send.
enum Go {
    /// Everything (with where its approvals stand, for a job with `approval:`).
    Payouts(Option<crate::plan::approval::Standing>),
    /// The payouts await approval: no payout or refund step runs, nor any export; the
    /// other steps run unless the job holds them too (`true`).
    Awaiting(crate::plan::approval::Standing, bool),
    /// The plan repeats another scope's payroll: nothing is sent (said here).
    Refused,
}

impl Go {
    /// Whether step `step` runs.
    fn runs(&self, step: &crate::job::Step) -> bool {
        match self {
            Go::Payouts(_) => true,
            // Money out, payouts and refunds alike, waits for the approval.
            Go::Awaiting(_, hold) => {
                !hold && !matches!(step.kind, StepKind::Payout | StepKind::Refund)
            }
            Go::Refused => false,
        }
    }
}

/// Before anything is sent: the duplicate-payroll guard, then the approvals.
async fn before_sending(job: &Job, ctx: &Ctx, opts: &RunOptions) -> Result<Go, RunError> {
    let window = job.guards.duplicate_window;
    let pays = job.steps.iter().any(|s| s.kind == StepKind::Payout);
    if pays
        && !opts.allow_duplicates
        && let Some(since) = work::guard_since(chrono::Utc::now(), window)
    {
        let (plan_id, name) = (ctx.plan_id, job.name.clone());
        let repeat = ctx
            .db
            .read(move |c| work::repeated_payroll(c, plan_id, &name, &since))
            .await?;
        if let Some(r) = repeat {
            tracing::error!(
                "refused as a duplicate payroll: {}; nothing was sent. If this payroll is meant, run again with --allow-duplicates",
                r.said(&job.scope, window)
            );
            return Ok(Go::Refused);
        }
    }
    let Some(approval) = &job.approval else {
        return Ok(Go::Payouts(None));
    };
    let (plan_id, a) = (ctx.plan_id, approval.clone());
    let standing = ctx
        .db
        .read(move |c| crate::plan::approval::standing(c, &a, plan_id, chrono::Utc::now()))
        .await?
        .ok_or_else(|| RunError::Fatal("the plan recorded no digest".into()))?;
    if standing.approved() {
        tracing::info!(
            digest = %standing.digest.digest,
            approvers = %standing.counted.join(", "),
            "the plan is approved: its payouts go out"
        );
        return Ok(Go::Payouts(Some(standing)));
    }
    for line in standing.lines() {
        tracing::warn!("awaiting approval: {line}");
    }
    tracing::warn!(
        "no payout or refund is sent until the plan has {} approvals: payrun approve {} --digest {} --as NAME",
        standing.required,
        job.path.display(),
        standing.digest.digest
    );
    Ok(Go::Awaiting(standing, approval.hold_other_steps))
}

/// The row steps, then the export steps (unless the rows were interrupted).
async fn execute_all(
    job: &Job,
    ctx: &Arc<Ctx>,
    retry_failed: bool,
    run_id: i64,
    planned: &crate::state::PlanCounts,
    go: &Go,
) -> Result<Ended, RunError> {
    // A first plan says how many items each step has to send: no need to count them
    // again (a cold pass over the new table, before the first request).
    let known = planned.fresh && !retry_failed;
    let todo: Vec<Option<u64>> = (0..job.steps.len())
        .map(|si| planned.steps.get(si).filter(|_| known).map(|c| c.new))
        .collect();
    let ended = execute(job, ctx.clone(), retry_failed, &todo, &|s| go.runs(s)).await?;
    let halt = ctx.halt.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(halt) = halt {
        let stay = "nothing more was sent, and the rows not done stay pending for the next run";
        return Err(RunError::Fatal(match halt {
            Halt::Refused(why) => format!(
                "the provider refused payrun's credentials ({why}); {stay} — check provider credentials{}",
                if job.provider.kind == crate::provider::ProviderKind::FinHub {
                    " and tenant_id"
                } else {
                    ""
                }
            ),
            Halt::Unreachable(why) => format!(
                "cannot reach the provider ({why}); {stay} — check provider.base_url and the network"
            ),
            Halt::SameAnswer { code, message } => {
                // The rows refused so far were refused for the job, not for themselves.
                let (plan_id, since, c) = (ctx.plan_id, ctx.started_at.clone(), code.clone());
                let m = message.clone();
                ctx.db
                    .write(move |db| work::requeue_refused(db, plan_id, &since, &c, &m))
                    .await?;
                format!(
                    "the provider refused {SAME_ANSWER} rows in a row the same way ({code}: {}) and nothing succeeded: its requests are probably not reaching the API; {stay} — check provider.base_url (its path too: Hello Clever's ends in /api) and the job's fields",
                    crate::redact::scrub(&message)
                )
            }
        }));
    }
    if let Go::Awaiting(..) = go {
        // The run is not whole until its payouts go: its exports wait for that run.
        return Ok(match ended {
            Ended::Done => Ended::AwaitingApproval,
            other => other,
        });
    }
    if job.exports.is_empty() || ended == Ended::Interrupted {
        return Ok(ended);
    }
    let all_done = export::run_all(job, ctx, run_id).await?;
    Ok(match all_done {
        _ if ctx.stopping() => Ended::Interrupted,
        true => ended,
        false => Ended::ExportFailed,
    })
}

/// Executes a planned job: `plan_id` is the plan, `run_id` the run holding its lock.
/// `known_todo`: the number of items each step has to send, where already known.
pub async fn execute(
    job: &Job,
    ctx: Arc<Ctx>,
    retry_failed: bool,
    known_todo: &[Option<u64>],
    runs: &(dyn Fn(&crate::job::Step) -> bool + Sync),
) -> Result<Ended, RunError> {
    let plan_id = ctx.plan_id;
    if retry_failed {
        let (retried, kept) = ctx
            .db
            .write(move |c| work::retry_failed(c, plan_id))
            .await?;
        tracing::info!(rows = retried, "--retry-failed: failed rows go out again");
        if kept > 0 {
            tracing::warn!(
                rows = kept,
                "--retry-failed: failed rows whose batch the provider holds and may still pay are not sent again (a transaction it reported failed may yet complete); `payrun reconcile` follows them"
            );
        }
    }
    let Some(input) = &job.input else {
        // A job of exports only: no rows to send.
        return Ok(Ended::Done);
    };
    let renderer = Renderer::new(job, ctx.db.key().clone());
    let mut rows = RecordReader::open(&input.csv, input.delimiter).map_err(RunError::Reread)?;
    let mut rows = RowSource {
        renderer: &renderer,
        reader: &mut rows,
    };
    for (si, step) in job.steps.iter().enumerate() {
        if ctx.stopping() {
            break;
        }
        if !runs(step) {
            tracing::info!(step = %step.id, "step held: the plan awaits approval");
            continue;
        }
        let todo = match known_todo.get(si).copied().flatten() {
            Some(n) => n,
            None => {
                let (step_id, states) = (
                    step.id.clone(),
                    [ItemState::Pending, ItemState::InFlight, ItemState::Blocked],
                );
                ctx.db
                    .read(move |c| work::count_in(c, plan_id, &step_id, &states))
                    .await?
            }
        };
        tracing::info!(step = %step.id, items = todo, "step started");
        ctx.progress.start(&step.id, todo);
        // Each step runner is given its provider's client (a job holds only its
        // provider's steps: checked when it loads).
        match (&ctx.client, step.kind) {
            (Client::HelloClever(hc), StepKind::Contact) => {
                contact::run(job, si, step, &ctx, hc, &mut rows).await?
            }
            (Client::HelloClever(hc), StepKind::Kyc) => {
                kyc::run(job, si, step, &ctx, hc, &mut rows).await?
            }
            (Client::HelloClever(hc), StepKind::Payout) => {
                payout::run(job, si, step, &ctx, hc, &mut rows).await?
            }
            (Client::HelloClever(hc), StepKind::Payin) => {
                payin::run(job, si, step, &ctx, hc, &mut rows).await?
            }
            (Client::HelloClever(hc), StepKind::Refund) => {
                payin::refunds(job, si, step, &ctx, hc, &mut rows).await?
            }
            (Client::FinHub(fh), kind)
                if kind.provider() == crate::provider::ProviderKind::FinHub =>
            {
                finhub::run(job, si, step, &ctx, fh, &mut rows).await?
            }
            (_, kind) => {
                return Err(RunError::Config(format!(
                    "step '{}': a {} step is not for this job's provider",
                    step.id,
                    kind.as_str()
                )));
            }
        }
        // Outcomes are queued without waiting: all of the step's are committed here.
        ctx.db.settled().await?;
        ctx.progress.finish();
        log_step_end(&ctx, &step.id).await?;
    }
    // What the items earn is added when the run is recorded as finished.
    Ok(if ctx.stopping() {
        Ended::Interrupted
    } else {
        Ended::Done
    })
}

/// Logs a step's end: its counts, and every row that failed or is blocked, with why.
async fn log_step_end(ctx: &Ctx, step: &str) -> Result<(), StateError> {
    let (plan_id, step_id) = (ctx.plan_id, step.to_string());
    let (rows, pending) = ctx
        .db
        .read(move |c| work::needing_a_look(c, plan_id, &step_id))
        .await?;
    for (row, state, code, message) in rows.iter().take(200) {
        // A key or a provider's message holds what the file or the provider put there:
        // printed as one line, control characters escaped.
        let message = crate::redact::scrub(message.as_deref().unwrap_or(""));
        let (row, message) = (
            crate::redact::printable(row),
            crate::redact::printable(&message),
        );
        tracing::warn!(step, row = %row, state = state.as_str(), code = code.as_deref().unwrap_or(""), "{message}");
    }
    if rows.len() > 200 {
        tracing::warn!(
            step,
            "… and {} more rows that need a look (see the report)",
            rows.len() - 200
        );
    }
    if pending > 0 {
        tracing::warn!(
            step,
            rows = pending,
            "{pending} not sent yet: the next run sends them"
        );
    }
    tracing::info!(
        step,
        needing_a_look = rows.len() as u64 + pending,
        "step finished"
    );
    Ok(())
}

//! What follows an attempt that ended: the job's next attempt is written as a pending run
//! request, or recorded `superseded`.
//!
//! Owns: turning a [`NextAttempt`] decision into its effect, the same for the scheduler (an
//! attempt this worker ran) and the lost-run recorder (an attempt whose worker vanished). A
//! pending attempt is a run-now signal carrying [`RetryOf`]: every worker sees it through its
//! job watch, waits until it is due, and claims it with [`Claims::claim_attempt`]
//! (crate::backend::Claims::claim_attempt), so exactly one worker runs it, and not necessarily
//! the one whose attempt failed. Leaves to others: the decision (`domain::retry`), claiming and
//! running the attempt (the scheduler).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;

use super::messages::RecordRun;
use crate::backend::{JobStore, Signal};
use crate::domain::retry::NextAttempt;
use crate::domain::{Backoff, Fence, Job, RunRecord, RunStatus, WorkerId};

/// Writes of a pending attempt tried this many times while the job store fails.
const SIGNAL_ATTEMPTS: u32 = 6;

/// Carries out `next` for `job`: signals the pending attempt (with the run's `params`), or
/// records it `superseded` through `log`, as `worker`.
pub(crate) async fn follow_up(
    next: NextAttempt,
    job: Job,
    params: BTreeMap<String, String>,
    worker: WorkerId,
    jobs: Arc<dyn JobStore>,
    log: Recipient<RecordRun>,
) {
    match next {
        NextAttempt::None => {}
        NextAttempt::Superseded { retry, next_tick } => {
            log::info!(
                "Retry superseded by the next tick (policy forbid); not run. job={} tick={} attempt={} due_at={} next_tick={next_tick}",
                job.name,
                retry.scheduled_at,
                retry.attempt,
                retry.due_at
            );
            let mut record = RunRecord::not_run(
                job.name.clone(),
                job.command.clone(),
                RunStatus::Superseded,
                retry.trigger(),
                retry.scheduled_at,
                worker,
                Fence(0),
                format!(
                    "superseded: attempt {} was due at {}, at or after the job's next tick at {} (policy forbid: the next tick wins)",
                    retry.attempt,
                    retry.due_at.to_rfc3339(),
                    next_tick.to_rfc3339()
                ),
            )
            .with_job_version(job.version);
            record.attempt = retry.attempt;
            record.params = (!params.is_empty()).then_some(params);
            log.do_send(RecordRun(record));
        }
        NextAttempt::Pending(retry) => {
            log::info!(
                "Attempt failed; retry scheduled. job={} tick={} attempt={} due_at={}",
                job.name,
                retry.scheduled_at,
                retry.attempt,
                retry.due_at
            );
            let signal = Signal::RunNow {
                job: job.name.clone(),
                request: retry.request_id(&job.name),
                env: params,
                retry: Some(retry.clone()),
            };
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            for n in 1..=SIGNAL_ATTEMPTS {
                match jobs.signal(signal.clone()).await {
                    Ok(_) => return,
                    Err(e) if n == SIGNAL_ATTEMPTS => log::error!(
                        "Cannot schedule a retry; the attempt will not run. job={} tick={} attempt={} error={e}",
                        job.name,
                        retry.scheduled_at,
                        retry.attempt
                    ),
                    Err(_) => tokio::time::sleep(backoff.next_delay()).await,
                }
            }
        }
    }
}

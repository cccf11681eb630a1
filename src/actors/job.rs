//! `JobActor`: one job on this node (the embedded queue). Its stages run in a task of their own
//! (`JobRun::drive`, every transition persisted), so the actor stays free to answer while they
//! run: `Status` gives the job's stages as they are at this moment (as last saved, with the
//! progress reported since), `Cancel` stops it. When the stages end the actor stops; when the
//! store failed under them (or the run panicked) it fails, and the supervisor restarts it with
//! backoff: the stages' deterministic outputs make that safe.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::job_run::JobRun;
use super::messages::{AdmitError, JobMessage};
use crate::job::{JobRecord, StageState};
use crate::persist::JobStore;

pub struct JobActor;

pub struct JobArgs {
    pub record: JobRecord,
    pub ctx: Arc<ServerCtx>,
    pub cancel: CancellationToken,
    /// A new job's admission, answered once its record is durable.
    pub admitted: Option<RpcReplyPort<Result<(), AdmitError>>>,
}

pub struct JobState {
    args: JobArgs,
    /// The job's stages as its run last reported them.
    live: watch::Receiver<Vec<StageState>>,
}

impl Actor for JobActor {
    type Msg = JobMessage;
    type State = JobState;
    type Arguments = JobArgs;

    async fn pre_start(&self, myself: ActorRef<JobMessage>, args: JobArgs) -> Result<JobState, ActorProcessingErr> {
        myself.send_message(JobMessage::Start)?;
        let (_, live) = watch::channel(args.record.stages.clone());
        Ok(JobState { args, live })
    }

    async fn handle(&self, myself: ActorRef<JobMessage>, message: JobMessage, state: &mut JobState) -> Result<(), ActorProcessingErr> {
        match message {
            JobMessage::Start => start(myself, state).await,
            JobMessage::Status(reply) => {
                let _ = reply.send(state.live.borrow().clone());
            }
            JobMessage::Cancel => state.args.cancel.cancel(),
            JobMessage::Ended(Ok(())) => myself.stop(Some("ended".into())),
            JobMessage::Ended(Err(error)) => return Err(error.into()),
        }
        Ok(())
    }
}

/// Persists a new job (answering its admission), then runs its stages in a task that reports
/// back with `Ended`.
async fn start(myself: ActorRef<JobMessage>, state: &mut JobState) {
    let JobArgs { record, ctx, cancel, admitted } = &mut state.args;
    if let Some(admitted) = admitted.take() {
        // No retrying here: the client is waiting, and a 503 tells it to come back.
        if let Err(e) = ctx.store.put(record).await {
            let _ = admitted.send(Err(AdmitError::Store(e.to_string())));
            myself.stop(Some("not admitted".into()));
            return;
        }
        let _ = admitted.send(Ok(()));
    }
    let (report, live) = watch::channel(record.stages.clone());
    state.live = live;
    let mut run = JobRun::new(ctx.clone(), record.clone(), cancel.clone()).reporting_to(report);
    crate::task::spawn_named("job-run", async move {
        let ended = match AssertUnwindSafe(run.drive()).catch_unwind().await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(panic) => Err(format!("the job's run panicked: {}", panic_message(&panic))),
        };
        let _ = myself.send_message(JobMessage::Ended(ended));
    });
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("no message")
}

//! `JobActor`: drives one job through all its stages on this node (the embedded queue), with
//! `JobRun` doing the stages and persisting every transition. A store failure fails the actor,
//! and the supervisor restarts it with backoff; the stages' deterministic outputs make that safe.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::job_run::JobRun;
use super::messages::{AdmitError, JobMessage};
use crate::job::JobRecord;
use crate::persist::JobStore;

pub struct JobActor;

pub struct JobArgs {
    pub record: JobRecord,
    pub ctx: Arc<ServerCtx>,
    pub cancel: CancellationToken,
    /// A new job's admission, answered once its record is durable.
    pub admitted: Option<RpcReplyPort<Result<(), AdmitError>>>,
}

impl Actor for JobActor {
    type Msg = JobMessage;
    type State = JobArgs;
    type Arguments = JobArgs;

    async fn pre_start(&self, myself: ActorRef<JobMessage>, args: JobArgs) -> Result<JobArgs, ActorProcessingErr> {
        myself.send_message(JobMessage::Start)?;
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<JobMessage>, _: JobMessage, state: &mut JobArgs) -> Result<(), ActorProcessingErr> {
        let mut run = JobRun::new(state.ctx.clone(), state.record.clone(), state.cancel.clone());
        if let Some(admitted) = state.admitted.take() {
            // No retrying here: the client is waiting, and a 503 tells it to come back.
            if let Err(e) = state.ctx.store.put(&state.record).await {
                let _ = admitted.send(Err(AdmitError::Store(e.to_string())));
                myself.stop(Some("not admitted".into()));
                return Ok(());
            }
            let _ = admitted.send(Ok(()));
        }
        run.drive().await?;
        myself.stop(Some(format!("{:?}", run.record.status)));
        Ok(())
    }
}

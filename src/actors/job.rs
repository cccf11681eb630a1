//! `JobActor`: drives one job through all its stages on this node (the embedded queue), with
//! `JobRun` doing the stages and persisting every transition. A store failure fails the actor,
//! and the supervisor restarts it with backoff; the stages' deterministic outputs make that safe.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::job_run::JobRun;
use super::messages::JobMessage;
use crate::job::JobRecord;

pub struct JobActor;

pub struct JobArgs {
    pub record: JobRecord,
    pub ctx: Arc<ServerCtx>,
    pub cancel: CancellationToken,
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
        run.drive().await?;
        myself.stop(Some(format!("{:?}", run.record.status)));
        Ok(())
    }
}

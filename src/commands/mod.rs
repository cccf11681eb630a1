//! The CLI's subcommands.

mod clip;
mod progress;
mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "clipmill", version, about = "Long videos in, short vertical clips out")]
pub struct Cli {
    /// A config file over the built-in defaults (see config.toml).
    #[arg(long, global = true, env = "CLIPMILL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, WebSocket progress, supervised job actors.
    Serve {
        /// With Redis configured: `api` takes requests and watchers, `worker` runs stages,
        /// `all` both. A single node on the embedded default is always `all`.
        #[arg(long, value_enum, default_value = "all", env = "CLIPMILL_ROLE")]
        role: crate::actors::cluster::Role,
    },
    /// Turn a video (file or URL) into scored, captioned vertical clips.
    Clip(clip::ClipArgs),
    /// Render every clip an EDIT.json describes.
    Render(render::RenderArgs),
    /// Print what GStreamer sees in an input (duration, streams, codecs) as JSON.
    Probe {
        input: PathBuf,
    },
    /// Print the JSON Schema of EDIT.json.
    Schema,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    crate::telemetry::init(&config.log);
    match cli.command {
        Command::Serve { role } => {
            if role != crate::actors::cluster::Role::All && config.redis.url.is_empty() {
                anyhow::bail!("--role {role:?} needs a shared queue: set redis.url (and postgres.url, s3.bucket)");
            }
            crate::server::run(&config, role).await
        }
        Command::Clip(args) => clip::run(&config, args).await,
        Command::Render(args) => render::run(&config, args).await,
        Command::Probe { input } => {
            let engine = crate::media::MediaEngine::new(&config.media)?;
            println!("{}", serde_json::to_string_pretty(&engine.probe(&input).await?)?);
            Ok(())
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&crate::edit::EditFile::schema())?);
            Ok(())
        }
    }
}

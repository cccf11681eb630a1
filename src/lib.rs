//! clipmill: long videos in, short vertical clips out.
//!
//! See ARCHITECTURE.md for the map. `media` is the GStreamer engine, `edit` the portable edit
//! format, `commands` the CLI's subcommands; `actors`, `net` and `persist` hold the server.

pub mod actors;
pub mod backoff;
pub mod analysis;
pub mod commands;
pub mod config;
pub mod edit;
pub mod egress;
pub mod job;
pub mod media;
pub mod metrics;
pub mod net;
pub mod persist;
pub mod pipeline;
pub mod server;
pub mod task;
pub mod telemetry;
pub mod usage;

//! The ractor actor tree of the server (job actors, stage pools, progress hub, supervisor).
//! Empty until the server lands; the CLI drives `media` directly.

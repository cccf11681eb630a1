//! Storage traits (`JobStore`, `JobQueue`, `BlobStore`, `Scratch`) with embedded and production
//! implementations side by side. Empty until the server lands.

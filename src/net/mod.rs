//! HTTP API (hyper), WebSocket progress (fastwebsockets) and auth. Empty until the server lands.

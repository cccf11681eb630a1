//! The fred plumbing shared by the Redis queue and bus: how clients are built (reconnect forever
//! with capped backoff, every command under a timeout, so an outage reads as
//! `StoreError::Unavailable` within seconds and heals by itself), how fred errors map onto
//! `StoreError`, and small readers for the RESP2 values streams and scripts return.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::StoreError;

/// Longest a non-blocking command may take, queued time during a reconnect included. Redis
/// answers in microseconds; past this the server is gone or wedged, and callers are better off
/// hearing `Unavailable` (they retry) than hanging.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP connect (and handshake) limit per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff: 100 ms doubling up to 2 s, forever (max attempts 0 = unlimited).
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;

/// A builder for clients of `url`. `fail_fast` decides whether the first connection may fail
/// (`init` then errors) or is retried like any later one.
pub fn builder(url: &str, fail_fast: bool) -> Result<Builder, StoreError> {
    let mut config = Config::from_url(url).map_err(|e| StoreError::Unavailable(format!("invalid redis url {url:?}: {}", e.details())))?;
    config.fail_fast = fail_fast;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, RECONNECT_MIN_MS, RECONNECT_MAX_MS, 2))
        .with_performance_config(|perf| perf.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|conn| {
            conn.connection_timeout = CONNECT_TIMEOUT;
            conn.internal_command_timeout = CONNECT_TIMEOUT;
        });
    Ok(builder)
}

/// Connects one client, failing (not retrying) when the server cannot be reached now.
pub async fn connect(url: &str) -> Result<Client, StoreError> {
    let client = builder(url, true)?.build().map_err(|e| store_error("connect", e))?;
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
        Ok(Ok(_driver)) => Ok(client),
        Ok(Err(e)) => Err(store_error("connect", e)),
        Err(_) => Err(StoreError::Unavailable(format!("redis at {url} did not answer within {:?}", CONNECT_TIMEOUT * 2))),
    }
}

/// Closes `client` in the background: for `Drop`, which cannot wait.
pub fn quit_in_background(client: Client) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await;
        });
    }
}

/// Options for a command that may block the server for `block` before answering.
pub fn blocking_options(block: Duration) -> Options {
    Options { timeout: Some(block + COMMAND_TIMEOUT), ..Default::default() }
}

/// A raw command; `blocking` marks those with BLOCK so fred never pipelines behind them.
pub fn command(name: &'static str, blocking: bool) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, blocking)
}

pub fn store_error(op: &str, e: Error) -> StoreError {
    match e.kind() {
        // The server answered, but not what our keys should hold (WRONGTYPE, garbage replies):
        // retrying will not help.
        ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::InvalidArgument => StoreError::Corrupt(format!("redis {op}: {}", e.details())),
        _ => StoreError::Unavailable(format!("redis {op}: {e}")),
    }
}

/// The stream or its consumer group is missing: after a restart without persistence.
pub fn is_nogroup(e: &Error) -> bool {
    e.details().contains("NOGROUP")
}

pub fn is_busygroup(e: &Error) -> bool {
    e.details().contains("BUSYGROUP")
}

/// The elements of an array reply; nil reads as empty.
pub fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

pub fn text(value: &Value) -> Option<Cow<'_, str>> {
    value.as_str()
}

/// A stream entry's `[field, value, ...]` list as a map.
pub fn fields(value: Value) -> HashMap<String, String> {
    let items = array(value);
    items.chunks_exact(2).filter_map(|pair| Some((text(&pair[0])?.into_owned(), text(&pair[1])?.into_owned()))).collect()
}

/// `[[id, [field, value, ...]], ...]` as `(id, fields)` pairs.
pub fn entries(value: Value) -> Vec<(String, HashMap<String, String>)> {
    array(value)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = array(entry).into_iter();
            let id = text(&parts.next()?)?.into_owned();
            Some((id, fields(parts.next().unwrap_or(Value::Null))))
        })
        .collect()
}

/// The entries of an XREAD/XREADGROUP reply over a single stream (`[[key, entries]]`, nil when
/// the block ran out).
pub fn read_reply(value: Value) -> Vec<(String, HashMap<String, String>)> {
    array(value)
        .into_iter()
        .flat_map(|stream| {
            let mut parts = array(stream).into_iter();
            parts.nth(1).map(entries).unwrap_or_default()
        })
        .collect()
}

/// Escapes glob characters so `text` matches only itself in SCAN MATCH.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_reply_takes_entries_of_the_stream() {
        let s = |t: &str| Value::from(t);
        let reply = Value::Array(vec![Value::Array(vec![
            s("key"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("job"), s("a")])]),
                Value::Array(vec![s("1-1"), Value::Array(vec![s("job"), s("b"), s("x"), s("y")])]),
            ]),
        ])]);
        let got = read_reply(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "1-0");
        assert_eq!(got[1].1["job"], "b");
        assert_eq!(got[1].1["x"], "y");
        assert!(read_reply(Value::Null).is_empty());
    }

    #[test]
    fn glob_escape_quotes_metacharacters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

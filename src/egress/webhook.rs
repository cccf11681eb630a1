//! Per-job webhooks: a POST per clip and one at the end, signed with HMAC-SHA256 over the body
//! (`X-Clipmill-Signature: sha256=HEX`), retried with exponential backoff. Each carries
//! `X-Clipmill-Delivery`, the same for every attempt and every re-run of the same event (job,
//! event, clip index), so a receiver can drop a repeat after a retry or a crash.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Policy;

const ATTEMPTS: u32 = 3;
const BASE_DELAY: Duration = Duration::from_secs(1);

/// The signature header value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    let hex = hex::encode(mac.finalize().into_bytes());
    format!("sha256={hex}")
}

/// The idempotency id of a webhook body: `JOB/EVENT` or, for a clip, `JOB/clip_ready/INDEX`.
pub fn delivery_id(body: &serde_json::Value) -> String {
    let (job, event) = (body["job"].as_str().unwrap_or_default(), body["event"].as_str().unwrap_or_default());
    match body["clip"]["index"].as_u64() {
        Some(index) => format!("{job}/{event}/{index}"),
        None => format!("{job}/{event}"),
    }
}

/// Delivers `body` to `url` with `http` (a client keeping to `policy`), signed with `secret`,
/// retrying failures; gives up quietly (logged) after the last attempt.
pub async fn deliver(http: &reqwest::Client, policy: &Policy, secret: &[u8], url: &str, body: &serde_json::Value) {
    // A name was checked at submission; an address literal is checked here, and every address
    // connected to by `http`'s resolver.
    if let Err(refused) = url::Url::parse(url).map_err(|e| e.to_string()).and_then(|u| policy.check_url(&u).map_err(|e| e.to_string())) {
        tracing::warn!(url, reason = %refused, "webhook not sent");
        return;
    }
    let bytes = serde_json::to_vec(body).expect("webhook bodies serialise");
    let (sig, id) = (signature(secret, &bytes), delivery_id(body));
    let mut backoff = crate::backoff::Backoff::new(BASE_DELAY, Duration::MAX);
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-clipmill-signature", &sig)
            .header("x-clipmill-delivery", &id)
            .body(bytes.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(url, attempt, status = r.status().as_u16(), "webhook refused"),
            Err(e) => tracing::warn!(url, attempt, error = %e, "webhook failed"),
        }
        if attempt < ATTEMPTS {
            backoff.wait().await;
        }
    }
}

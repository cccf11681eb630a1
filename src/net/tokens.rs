//! `POST /api/tokens`: a short-lived token that stands for the tenant's API key in a WebSocket
//! URL (`?token=`, accepted by the event routes only), so a browser, which cannot set headers on
//! a WebSocket, never puts the key itself where proxies and access logs keep URLs.
//!
//! A token is `EXPIRES.SIG.TENANT`: an HMAC-SHA256 over the tenant and the expiry with the
//! server's signing secret, which every node of a cluster shares.

use hmac::{Hmac, Mac};
use hyper::StatusCode;
use serde_json::json;
use sha2::Sha256;

use super::{Api, ApiError, Resp, json};
use crate::job::{TenantId, now_ms};

/// How long a token opens WebSockets for: enough to connect, not enough to be worth stealing.
pub const TTL_S: u64 = 60;

pub fn create(api: &Api, tenant: &TenantId) -> Resp {
    let expires = now_ms() / 1000 + TTL_S;
    let token = format!("{expires}.{}.{tenant}", sign(&api.ctx.secret, tenant, expires));
    json(StatusCode::CREATED, &json!({ "token": token, "expires_in_s": TTL_S }))
}

/// The tenant a token was made for, if it is ours and has not expired.
pub fn verify(secret: &[u8], token: &str, now_s: u64) -> Result<TenantId, ApiError> {
    let refused = || ApiError::Unauthorized;
    let mut parts = token.splitn(3, '.');
    let (Some(expires), Some(sig), Some(tenant)) = (parts.next(), parts.next(), parts.next()) else { return Err(refused()) };
    let expires: u64 = expires.parse().map_err(|_| refused())?;
    let sig = hex::decode(sig).map_err(|_| refused())?;
    mac(secret, tenant, expires).verify_slice(&sig).map_err(|_| refused())?;
    if expires < now_s {
        return Err(refused());
    }
    Ok(tenant.into())
}

fn sign(secret: &[u8], tenant: &str, expires: u64) -> String {
    hex::encode(mac(secret, tenant, expires).finalize().into_bytes())
}

fn mac(secret: &[u8], tenant: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes keys of any length");
    mac.update(format!("events-token\n{tenant}\n{expires}").as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_stands_for_its_tenant_until_it_expires() {
        let token = format!("1000.{}.tenant-a", sign(b"secret", "tenant-a", 1000));
        assert_eq!(verify(b"secret", &token, 999).unwrap().as_str(), "tenant-a");
        assert!(verify(b"secret", &token, 1001).is_err(), "expired");
        assert!(verify(b"other", &token, 999).is_err(), "another secret");
        let moved = token.replace("tenant-a", "tenant-b");
        assert!(verify(b"secret", &moved, 999).is_err(), "another tenant");
        let later = token.replacen("1000", "9999", 1);
        assert!(verify(b"secret", &later, 999).is_err(), "a later expiry");
        for junk in ["", "1000", "x.y.z", "1000..tenant-a"] {
            assert!(verify(b"secret", junk, 999).is_err(), "{junk:?}");
        }
    }
}

//! The web dashboard: `GET /` and `GET /assets/{name}`, a single page and its script and style
//! from `web/`, compiled into the binary (hand-written, no bundler: what is in the repository is
//! what is served). The page talks to the public API only, as any client would.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles from this origin
//! only (no inline code), media from this origin and from wherever clip URLs point (the public
//! URL, an S3 endpoint). Assets are named by their content's hash in the page, so they are cached
//! for a year; the page itself is revalidated every time.

use std::sync::LazyLock;

use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{ApiError, Resp, full};
use crate::config::Config;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 2] = [
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../../web/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../../web/app.css") },
];

const INDEX: &str = include_str!("../../web/index.html");

/// A short hash of each asset's content (in `ASSETS` order): its version in the page's URLs and
/// its ETag, worked out once.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| hex::encode(&Sha256::digest(a.body.as_bytes())[..6])).collect());

/// The page, its asset links made versioned (`app.js` → `/assets/app.js?v=HASH`).
static PAGE: LazyLock<String> = LazyLock::new(|| {
    ASSETS.iter().zip(VERSIONS.iter()).fold(INDEX.to_string(), |page, (a, v)| page.replace(&format!("\"{}\"", a.name), &format!("\"/assets/{}?v={v}\"", a.name)))
});

/// What the dashboard's responses are allowed to load.
pub struct Policy {
    csp: String,
}

impl Policy {
    pub fn new(config: &Config) -> Self {
        let mut media = vec!["'self'".to_string(), "blob:".into()];
        let origins = [config.server.public_url.as_str(), if config.s3.bucket.is_empty() { "" } else { config.s3.endpoint.as_str() }];
        media.extend(origins.iter().filter_map(|u| url::Url::parse(u).ok()).map(|u| u.origin().ascii_serialization()).filter(|o| o != "null"));
        let media = media.join(" ");
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src {media}; connect-src 'self' {media}; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        Self { csp }
    }

    fn respond(&self, content_type: &str, cache: &str, etag: Option<&str>, body: &'static [u8]) -> Resp {
        let mut resp = Response::builder()
            .header("content-type", content_type)
            .header("cache-control", cache)
            .header("content-security-policy", &self.csp)
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer");
        if let Some(etag) = etag {
            resp = resp.header("etag", format!("\"{etag}\""));
        }
        resp.body(full(body)).expect("valid response")
    }

    /// `GET /`: the page, revalidated on every visit so a new build's assets are picked up.
    pub fn page(&self) -> Resp {
        self.respond("text/html; charset=utf-8", "no-cache", None, PAGE.as_bytes())
    }

    /// `GET /assets/{name}`: immutable under its versioned URL.
    pub fn asset(&self, name: &str, if_none_match: Option<&str>) -> Result<Resp, ApiError> {
        let at = ASSETS.iter().position(|a| a.name == name).ok_or(ApiError::NotFound)?;
        let (asset, etag) = (&ASSETS[at], &VERSIONS[at]);
        let unchanged = if_none_match.is_some_and(|v| v.trim_matches('"') == etag);
        let body: &'static [u8] = if unchanged { b"" } else { asset.body.as_bytes() };
        let mut resp = self.respond(asset.content_type, "public, max-age=31536000, immutable", Some(etag), body);
        if unchanged {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_by_its_version() {
        for (a, v) in ASSETS.iter().zip(VERSIONS.iter()) {
            assert!(PAGE.contains(&format!("/assets/{}?v={v}", a.name)), "{} is not linked", a.name);
        }
        assert!(!PAGE.contains("<script>") && !PAGE.contains(" style="), "inline code would break the policy");
    }

    #[test]
    fn media_may_come_from_the_public_url_and_the_s3_endpoint() {
        let mut config = Config::load(None).unwrap();
        config.server.public_url = "https://clips.example.com/".into();
        let csp = Policy::new(&config).csp;
        assert!(csp.contains("media-src 'self' blob: https://clips.example.com;"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
    }
}

//! Where a tenant's URL may lead: the guard against server-side request forgery.
//!
//! A tenant names the URLs the server fetches (sources) and posts to (webhooks). By default none
//! of those connections may reach the server's own networks: loopback, private, shared (CGNAT),
//! link-local (cloud metadata services), unique-local, multicast, unspecified and reserved
//! addresses, in IPv4 and IPv6, including IPv4 addresses carried inside IPv6 (mapped, compatible,
//! NAT64, 6to4). `fetch.allow_private_networks` lifts the guard; `fetch.allowed_networks` lets
//! named networks through (e.g. `127.0.0.1/32` for a local demo).
//!
//! The check is made on the addresses a connection is really made to, not on the name: our HTTP
//! clients resolve through [`GuardedResolver`], which hands the connector only allowed addresses
//! (so a name that resolves to a private address, or re-resolves to one later, gets nowhere), an
//! IP literal in a URL or in any redirect is checked before it is used, and yt-dlp, which makes
//! its own connections, goes through the guarded proxy in `proxy.rs`.

pub mod proxy;
pub mod webhook;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::FetchConfig;

/// Redirects our clients follow at most, as browsers do.
pub const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    #[error("url not allowed: {0}")]
    Scheme(String),
    #[error("url not allowed: {host} is {addr}, a private or reserved address (fetch.allow_private_networks is off)")]
    Private { host: String, addr: IpAddr },
    #[error("url not allowed: {0} has no address")]
    NoAddress(String),
}

impl EgressError {
    pub fn code(&self) -> &'static str {
        "url_not_allowed"
    }

    /// The guard's refusal somewhere in `error`'s chain of sources, if that is why it failed.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(refused) = e.downcast_ref::<EgressError>() {
                return Some(refused);
            }
            next = e.source();
        }
        None
    }
}

/// Which addresses outgoing connections made for a tenant may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_private: bool,
    allowed: Vec<IpNet>,
}

impl Policy {
    /// From `[fetch]`; `allowed_networks` was validated with the rest of the configuration.
    pub fn from_config(config: &FetchConfig) -> Self {
        let allowed = config.allowed_networks.iter().filter_map(|n| crate::config::parse_network(n).ok()).collect();
        Self { allow_private: config.allow_private_networks, allowed }
    }

    /// Everything allowed (for operator-configured endpoints and tests of the policy itself).
    pub fn open() -> Self {
        Self { allow_private: true, allowed: Vec::new() }
    }

    pub fn allows(&self, addr: IpAddr) -> bool {
        self.allow_private || is_public(addr) || self.allowed.iter().any(|n| n.contains(&canonical(addr)))
    }

    /// Checks what can be told from the URL alone: an http(s) scheme, and a host that, when it
    /// is an IP literal, is allowed. Names are checked when they are resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::Scheme(format!("{}: only http and https", url.scheme())));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(EgressError::NoAddress(url.to_string())),
        };
        match literal {
            Some(addr) if !self.allows(addr) => Err(EgressError::Private { host: url.host_str().unwrap_or_default().into(), addr }),
            _ => Ok(()),
        }
    }

    /// Resolves `host` and keeps the allowed addresses; refuses when none is left.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port)).await.map_err(|_| EgressError::NoAddress(host.to_string()))?.collect(),
        };
        let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| self.allows(a.ip())).collect();
        match (allowed.is_empty(), found.first()) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(EgressError::Private { host: host.to_string(), addr: refused.ip() }),
            (true, None) => Err(EgressError::NoAddress(host.to_string())),
        }
    }

    /// Checks a tenant's URL as far as can be told at once (scheme, IP literal, and a name that
    /// resolves only to refused addresses), for a request to be refused before any job exists.
    /// A name that does not resolve now is left for the connection to decide.
    pub async fn precheck(&self, url: &url::Url) -> Result<(), EgressError> {
        self.check_url(url)?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            let resolved = tokio::time::timeout(Duration::from_secs(5), self.resolve(name, port)).await;
            if let Ok(Err(refused @ EgressError::Private { .. })) = resolved {
                return Err(refused);
            }
        }
        Ok(())
    }

    /// An HTTP client whose every connection, redirects included (up to `max_redirects`), keeps
    /// to this policy. It never uses a proxy from the environment (that would hide the address
    /// connected to).
    pub fn client(&self, builder: reqwest::ClientBuilder, max_redirects: usize) -> reqwest::Result<reqwest::Client> {
        let redirects = self.clone();
        builder
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(self.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= max_redirects {
                    return attempt.stop();
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .build()
    }
}

/// Resolves names for reqwest and hands it only the addresses the policy allows.
struct GuardedResolver(Policy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            // The connector puts the URL's port on the addresses; 0 is a placeholder.
            let addrs = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An IPv6 address that carries an IPv4 one, as that IPv4 address; any other as it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002:AABB:CCDD::/48`) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !(s[6] == 0 && s[7] <= 1) => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

/// Whether `addr` is a globally reachable unicast address.
pub fn is_public(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || (v6.segments()[..6] == [0, 0, 0, 0, 0, 0])) // what is left of ::/96
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_reserved_addresses_are_refused_in_every_spelling() {
        for refused in [
            "127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
            "224.0.0.1", "255.255.255.255", "240.0.0.1", "::1", "::", "fc00::1", "fd12::1", "fe80::1", "ff02::1",
            "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1",
        ] {
            assert!(!is_public(ip(refused)), "{refused} must be refused");
        }
        for public in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(ip(public)), "{public} is public");
        }
    }

    #[test]
    fn the_switch_and_the_allow_list_let_private_addresses_through() {
        let mut config = crate::config::Config::load(None).unwrap().fetch;
        assert!(!Policy::from_config(&config).allows(ip("127.0.0.1")), "refused by default");
        config.allowed_networks = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        let listed = Policy::from_config(&config);
        assert!(listed.allows(ip("127.0.0.1")) && listed.allows(ip("::ffff:127.0.0.1")) && listed.allows(ip("10.9.9.9")));
        assert!(!listed.allows(ip("127.0.0.2")) && !listed.allows(ip("169.254.169.254")));
        config.allow_private_networks = true;
        assert!(Policy::from_config(&config).allows(ip("169.254.169.254")));
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_addresses() {
        let policy = Policy::default();
        let check = |s: &str| policy.check_url(&url::Url::parse(s).unwrap());
        assert!(check("https://example.com/v.mp4").is_ok(), "names are checked on resolution");
        for refused in ["file:///etc/passwd", "ftp://example.com/x", "gopher://example.com/", "http://127.0.0.1:6379/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest/meta-data/", "http://2130706433/", "http://0x7f.1/"] {
            let err = check(refused).expect_err(refused);
            assert_eq!(err.code(), "url_not_allowed");
        }
    }
}

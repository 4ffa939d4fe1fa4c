//! API key restrictions as the data plane enforces them: pure matchers over plain data.
//!
//! The rules follow Google's documentation of API Keys v2 `Restrictions`
//! (../shared/spec/gcp-control-plane.md §1.2 and §1.6):
//!
//! - **API targets**: the called service must equal one target's `service`; a target with
//!   no `methods` allows every method, otherwise one entry must match the full RPC name
//!   (`google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent`). An entry is a
//!   fully-qualified name, a bare method (`GenerateContent`), a qualified tail
//!   (`GenerativeService.GenerateContent`), a prefix ending in `*` (`Generate*`, matched
//!   against the bare method; `google.ai.*`, with a dot, matched against the qualified
//!   name), or any of those after `{service}.` (`generativelanguage.googleapis.com.Count*`).
//!   Services and methods compare case-insensitively. No targets: everything is allowed.
//! - **Server IPs**: single IPv4/IPv6 addresses or CIDR ranges of either family. An
//!   IPv4-mapped IPv6 caller (`::ffff:a.b.c.d`) is the IPv4 address.
//! - **Browser referrers** ([`ReferrerPattern`]): optional `http://`/`https://` scheme
//!   (none = both), `*` only as the whole leading host label (`*.example.com`: subdomains,
//!   not the apex) and at the end of the path, optional port (`:8000`, `:*`; none = the
//!   scheme's default port), host-only = `/*`, exact paths compared literally, query and
//!   fragment ignored; other schemes in Google's `__{scheme}_url__` encoding.
//! - **Android**: `X-Android-Package` and `X-Android-Cert` must match one entry together; the
//!   SHA-1 compares without colons, case-insensitively.
//! - **iOS**: `X-Ios-Bundle-Identifier` must equal one allowed bundle id.
//!
//! A client restriction with an empty allow-list allows nothing. Malformed patterns never
//! match (they cannot widen a restriction). Must not touch: HTTP types, wire formats, I/O.

use keyplane_core::{AndroidApplication, ApiTarget, Restrictions};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

// =========================================================================================
// The whole decision
// =========================================================================================

/// The call being authorized: the API service and the full RPC method name.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `generativelanguage.googleapis.com`
    pub service: &'a str,
    /// `google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent`
    pub method: &'a str,
}

/// What the request says about its client.
#[derive(Debug, Clone, Default)]
pub struct Client<'a> {
    /// The caller's address (see [`client_address`]).
    pub address: CallerAddress,
    /// The `Referer` header.
    pub referrer: Option<&'a str>,
    /// `X-Android-Package`
    pub android_package: Option<&'a str>,
    /// `X-Android-Cert`
    pub android_cert: Option<&'a str>,
    /// `X-Ios-Bundle-Identifier`
    pub ios_bundle_id: Option<&'a str>,
}

/// The caller's address, or what stood in its place when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerAddress {
    Known(IpAddr),
    /// Not an address (a forwarded-for entry such as `unknown`); shown as is, never allowed.
    Unknown(String),
}

impl Default for CallerAddress {
    fn default() -> Self {
        CallerAddress::Unknown("unknown".to_owned())
    }
}

impl fmt::Display for CallerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerAddress::Known(ip) => write!(f, "{ip}"),
            CallerAddress::Unknown(s) => f.write_str(s),
        }
    }
}

/// Why a key's restrictions refused a call; each maps to one ErrorInfo reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// `API_KEY_SERVICE_BLOCKED`
    Service,
    /// `API_KEY_IP_ADDRESS_BLOCKED`, with the caller address as shown to the client.
    Ip(String),
    /// `API_KEY_HTTP_REFERRER_BLOCKED`, with the referrer (`None`: no header).
    Referrer(Option<String>),
    /// `API_KEY_ANDROID_APP_BLOCKED`, with the package (`None`: no header).
    Android(Option<String>),
    /// `API_KEY_IOS_APP_BLOCKED`, with the bundle id (`None`: no header).
    Ios(Option<String>),
}

impl Denied {
    /// The ErrorInfo reason Google sends for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Service => "API_KEY_SERVICE_BLOCKED",
            Denied::Ip(_) => "API_KEY_IP_ADDRESS_BLOCKED",
            Denied::Referrer(_) => "API_KEY_HTTP_REFERRER_BLOCKED",
            Denied::Android(_) => "API_KEY_ANDROID_APP_BLOCKED",
            Denied::Ios(_) => "API_KEY_IOS_APP_BLOCKED",
        }
    }
}

fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Checks a key's restrictions in Google's order: API targets first, then the client
/// restriction (IPs, referrers, Android apps, iOS apps; a valid key has at most one).
pub fn check<R: KeyRestrictions + ?Sized>(
    restricted: &R,
    call: Call<'_>,
    client: &Client<'_>,
) -> Result<(), Denied> {
    let r = restricted.restrictions();
    if !api_targets_allow(&r.api_targets, call.service, call.method) {
        return Err(Denied::Service);
    }
    if let Some(server) = &r.server_key_restrictions {
        let allowed = match &client.address {
            CallerAddress::Known(ip) => restricted.server_ip_allowed(&server.allowed_ips, *ip),
            CallerAddress::Unknown(_) => false,
        };
        if !allowed {
            return Err(Denied::Ip(client.address.to_string()));
        }
    }
    if let Some(browser) = &r.browser_key_restrictions {
        let referrer = present(client.referrer);
        if !referrer.is_some_and(|r| referrer_allowed(&browser.allowed_referrers, r)) {
            return Err(Denied::Referrer(referrer.map(str::to_owned)));
        }
    }
    if let Some(android) = &r.android_key_restrictions {
        let package = present(client.android_package);
        let cert = present(client.android_cert);
        let allowed = match (package, cert) {
            (Some(p), Some(c)) => android_allowed(&android.allowed_applications, p, c),
            _ => false,
        };
        if !allowed {
            return Err(Denied::Android(package.map(str::to_owned)));
        }
    }
    if let Some(ios) = &r.ios_key_restrictions {
        let bundle = present(client.ios_bundle_id);
        if !bundle.is_some_and(|b| ios_allowed(&ios.allowed_bundle_ids, b)) {
            return Err(Denied::Ios(bundle.map(str::to_owned)));
        }
    }
    Ok(())
}

/// Restrictions as [`check`] reads them: plain [`Restrictions`] (parsed on every call) or
/// [`CompiledRestrictions`] (the snapshot's form, parsed once).
pub trait KeyRestrictions {
    fn restrictions(&self) -> &Restrictions;

    /// Whether `ip` matches `allowed` (this value's `serverKeyRestrictions.allowedIps`).
    fn server_ip_allowed(&self, allowed: &[String], ip: IpAddr) -> bool {
        ip_allowed(allowed, ip)
    }
}

impl KeyRestrictions for Restrictions {
    fn restrictions(&self) -> &Restrictions {
        self
    }
}

impl<T: KeyRestrictions + ?Sized> KeyRestrictions for std::sync::Arc<T> {
    fn restrictions(&self) -> &Restrictions {
        (**self).restrictions()
    }
    fn server_ip_allowed(&self, allowed: &[String], ip: IpAddr) -> bool {
        (**self).server_ip_allowed(allowed, ip)
    }
}

/// A key's restrictions with the server-IP list parsed ahead of the request path.
/// Reads as the [`Restrictions`] it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRestrictions {
    restrictions: Restrictions,
    /// `allowedIps` as ranges; entries that do not parse are left out (they never match).
    allowed_nets: Vec<IpNet>,
}

impl CompiledRestrictions {
    pub fn new(restrictions: Restrictions) -> Self {
        let allowed_nets = restrictions
            .server_key_restrictions
            .iter()
            .flat_map(|s| s.allowed_ips.iter())
            .filter_map(|a| a.parse::<IpNet>().ok())
            .collect();
        CompiledRestrictions {
            restrictions,
            allowed_nets,
        }
    }
}

impl std::ops::Deref for CompiledRestrictions {
    type Target = Restrictions;
    fn deref(&self) -> &Restrictions {
        &self.restrictions
    }
}

impl KeyRestrictions for CompiledRestrictions {
    fn restrictions(&self) -> &Restrictions {
        &self.restrictions
    }
    fn server_ip_allowed(&self, _allowed: &[String], ip: IpAddr) -> bool {
        self.allowed_nets.iter().any(|n| n.contains(ip))
    }
}

// =========================================================================================
// API targets
// =========================================================================================

/// Whether `apiTargets` let `service`/`method` through (no targets: everything).
pub fn api_targets_allow(targets: &[ApiTarget], service: &str, method: &str) -> bool {
    targets.is_empty()
        || targets.iter().any(|t| {
            t.service.trim().eq_ignore_ascii_case(service)
                && (t.methods.is_empty()
                    || t.methods.iter().any(|m| method_matches(m, service, method)))
        })
}

/// One `ApiTarget.methods` entry against a full RPC method name (see the module docs).
/// Compares ASCII case-insensitively in place: no allocation on the request path.
pub fn method_matches(pattern: &str, service: &str, method: &str) -> bool {
    let pattern = pattern.trim().as_bytes();
    let full = method.trim().as_bytes();
    let service = service.trim().as_bytes();
    if pattern.is_empty() || full.is_empty() {
        return false;
    }
    // `{service}.` in front of the pattern is dropped (unless nothing follows it).
    let pattern = match pattern.len().checked_sub(service.len() + 1) {
        Some(rest) if rest > 0 => {
            let (head, tail) = pattern.split_at(service.len());
            if head.eq_ignore_ascii_case(service) && tail[0] == b'.' {
                &tail[1..]
            } else {
                pattern
            }
        }
        _ => pattern,
    };
    let simple = match full.iter().rposition(|&b| b == b'.') {
        Some(i) => &full[i + 1..],
        None => full,
    };
    // `full` and every tail of it that starts after a dot.
    let tails = std::iter::once(full).chain(
        full.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'.')
            .map(|(i, _)| &full[i + 1..]),
    );
    let starts_with = |s: &[u8], prefix: &[u8]| {
        s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    match pattern.split_last() {
        Some((b'*', prefix)) => {
            if prefix.contains(&b'*') {
                false
            } else if prefix.contains(&b'.') {
                tails.into_iter().any(|t| starts_with(t, prefix))
            } else {
                starts_with(simple, prefix)
            }
        }
        // An exact pattern can only equal the one tail of its own length.
        _ => {
            let Some(start) = full.len().checked_sub(pattern.len()) else {
                return false;
            };
            !pattern.contains(&b'*')
                && (start == 0 || full[start - 1] == b'.')
                && full[start..].eq_ignore_ascii_case(pattern)
        }
    }
}

// =========================================================================================
// IP addresses and ranges
// =========================================================================================

/// An address or CIDR range of either family (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
/// Host bits below the prefix are ignored, as in `ipnet`'s `trunc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is neither an IP address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP address or CIDR range: {0:?}")]
pub struct InvalidIpNet(pub String);

impl IpNet {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this range. An IPv4-mapped IPv6 address is its IPv4 address, and
    /// an IPv4 caller is also compared in its mapped form against IPv6 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(net),
                u128::from(ip.to_ipv6_mapped()),
                128,
                self.prefix,
            ),
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// The first `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(bits);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

/// An IPv4-mapped IPv6 address as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = InvalidIpNet;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIpNet(s.to_owned());
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = match parse_ipv4(addr) {
            Some(v4) => IpAddr::V4(v4),
            None => addr.parse().map_err(|_| bad())?,
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(IpNet { addr, prefix })
    }
}

/// Dotted-quad IPv4 exactly as `Ipv4Addr::from_str` reads it (four decimal octets of one
/// to three digits, no leading zeros, at most 255), without its general parser: allowed-IP
/// lists are read on every request. `None` for anything else.
fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.as_bytes().split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut n: u16 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(b - b'0');
        }
        *octet = u8::try_from(n).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

impl TryFrom<String> for IpNet {
    type Error = InvalidIpNet;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` matches one entry of `allowedIps` (entries that do not parse never match).
pub fn ip_allowed(allowed: &[String], ip: IpAddr) -> bool {
    allowed
        .iter()
        .filter_map(|a| a.parse::<IpNet>().ok())
        .any(|n| n.contains(ip))
}

/// One `X-Forwarded-For` entry as an address: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`,
/// `[::1]:80`, optionally quoted.
pub fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let e = entry.trim().trim_matches('"');
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = e.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return if port_ok {
            inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        };
    }
    let (host, port) = e.split_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The caller's address: the socket peer, unless the peer is a trusted proxy, in which case
/// `X-Forwarded-For` (all headers' entries, in order) is read from the right, skipping
/// trusted proxies; the first other entry is the client. If every entry is a trusted proxy
/// the leftmost one is. An entry that is not an address stops the walk and is the answer
/// (as [`CallerAddress::Unknown`]): nothing to its left can be trusted.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted_proxies: &[IpNet],
) -> CallerAddress {
    let Some(peer) = peer.map(canonical) else {
        return CallerAddress::default();
    };
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(peer) {
        return CallerAddress::Known(peer);
    }
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut last = CallerAddress::Known(peer);
    for entry in entries.iter().rev() {
        match parse_forwarded_address(entry) {
            Some(ip) => {
                let ip = canonical(ip);
                last = CallerAddress::Known(ip);
                if !trusted(ip) {
                    return last;
                }
            }
            None => {
                let shown: String = entry.chars().take(64).collect();
                return CallerAddress::Unknown(shown);
            }
        }
    }
    last
}

// =========================================================================================
// Browser referrers
// =========================================================================================

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Any host (`*`).
    Any,
    /// Exactly this host (lowercase, no trailing dot).
    Exact(String),
    /// A subdomain of this domain, at any depth, not the domain itself (`*.example.com`
    /// is stored as `.example.com`).
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// No port written: the scheme's default port only.
    Default,
    /// `:*`
    Any,
    Exact(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathRule {
    Prefix(String),
    Exact(String),
}

impl PathRule {
    fn parse(path: &str) -> Option<PathRule> {
        match path.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Some(PathRule::Prefix(prefix.to_owned())),
            Some(_) => None,
            None if path.contains('*') => None,
            None => Some(PathRule::Exact(path.to_owned())),
        }
    }
    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Prefix(p) => path.starts_with(p.as_str()),
            PathRule::Exact(p) => path == p,
        }
    }
}

/// One `allowedReferrers` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerPattern(Pattern);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Web {
        /// `None`: http or https.
        scheme: Option<String>,
        host: Host,
        port: Port,
        path: PathRule,
    },
    /// `__{scheme}_url__{rest}`: a non-web origin (`__file_url__//path/to/*`).
    Special { scheme: String, rest: PathRule },
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "ftp" => Some(21),
        _ => None,
    }
}

/// `host[:port]` of an authority (`[v6]` literals kept bracketed); `None` when malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        return match after {
            "" => Some((host, None)),
            _ => after.strip_prefix(':').map(|p| (host, Some(p))),
        };
    }
    match authority.split_once(':') {
        Some((_, p)) if p.contains(':') => None,
        Some((h, p)) => Some((h, Some(p))),
        None => Some((authority, None)),
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Leading slashes dropped: `file:///a` and `__file_url__//a` both name `a`.
fn special_rest(s: &str) -> &str {
    s.trim_start_matches('/')
}

impl ReferrerPattern {
    /// Parses an `allowedReferrers` entry; `None` for entries Google rejects (a `*` anywhere
    /// but the leading host label, the port or the end of the path; an empty host).
    pub fn parse(pattern: &str) -> Option<ReferrerPattern> {
        let p = pattern.trim();
        if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        if p == "*" {
            return Some(ReferrerPattern(Pattern::Web {
                scheme: None,
                host: Host::Any,
                port: Port::Any,
                path: PathRule::Prefix(String::new()),
            }));
        }
        if let Some(rest) = p.strip_prefix("__") {
            if let Some(idx) = rest.find("_url__") {
                let scheme = rest[..idx].to_ascii_lowercase();
                if !is_scheme(&scheme) {
                    return None;
                }
                let rest = PathRule::parse(special_rest(&rest[idx + "_url__".len()..]))?;
                return Some(ReferrerPattern(Pattern::Special { scheme, rest }));
            }
        }
        let (scheme, rest) = match p.split_once("://") {
            Some(("*", rest)) => (None, rest),
            Some((s, rest)) if is_scheme(s) => (Some(s.to_ascii_lowercase()), rest),
            Some(_) => return None,
            None => (None, p),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/*"),
        };
        // Query strings never take part in matching.
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let (host, port) = split_host_port(authority)?;
        let host = if host == "*" {
            Host::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') || domain.starts_with('.') {
                return None;
            }
            Host::Subdomains(format!(".{}", normalize_host(domain)))
        } else if host.is_empty() || host.contains('*') {
            return None;
        } else {
            Host::Exact(normalize_host(host))
        };
        let port = match port {
            None => Port::Default,
            Some("*") => Port::Any,
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Port::Exact(n.parse().ok()?)
            }
            Some(_) => return None,
        };
        let path = PathRule::parse(path)?;
        Some(ReferrerPattern(Pattern::Web {
            scheme,
            host,
            port,
            path,
        }))
    }

    /// Whether a `Referer` header value matches.
    pub fn matches(&self, referrer: &str) -> bool {
        let Some(r) = ParsedReferrer::parse(referrer) else {
            return false;
        };
        match &self.0 {
            Pattern::Special { scheme, rest } => {
                r.scheme == *scheme && rest.matches(special_rest(r.opaque))
            }
            Pattern::Web {
                scheme,
                host,
                port,
                path,
            } => {
                let Some(web) = &r.web else {
                    return false;
                };
                let scheme_ok = match scheme {
                    Some(s) => *s == r.scheme,
                    None => r.scheme == "http" || r.scheme == "https",
                };
                let host_ok = match host {
                    Host::Any => true,
                    Host::Exact(h) => web.host == *h,
                    Host::Subdomains(suffix) => {
                        web.host.len() > suffix.len() && web.host.ends_with(suffix.as_str())
                    }
                };
                let effective = web.port.or_else(|| default_port(&r.scheme));
                let port_ok = match port {
                    Port::Any => true,
                    Port::Default => web.port.is_none() || web.port == default_port(&r.scheme),
                    Port::Exact(n) => effective == Some(*n),
                };
                scheme_ok && host_ok && port_ok && path.matches(&web.path)
            }
        }
    }
}

struct WebParts {
    host: String,
    port: Option<u16>,
    path: String,
}

struct ParsedReferrer<'a> {
    scheme: String,
    /// Everything after `scheme:` (for the special encodings).
    opaque: &'a str,
    /// Present when the referrer has an authority (`scheme://host...`).
    web: Option<WebParts>,
}

impl<'a> ParsedReferrer<'a> {
    fn parse(referrer: &'a str) -> Option<ParsedReferrer<'a>> {
        let r = referrer.trim();
        let (scheme, opaque) = r.split_once(':')?;
        if !is_scheme(scheme) {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let web = opaque.strip_prefix("//").and_then(|after| {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = &after[..end];
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) = split_host_port(authority)?;
            let port = match port {
                None | Some("") => None,
                Some(p) => Some(p.parse::<u16>().ok()?),
            };
            let rest = &after[end..];
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            let path = if path.is_empty() { "/" } else { path };
            let host = normalize_host(host);
            if host.is_empty() {
                return None;
            }
            Some(WebParts {
                host,
                port,
                path: path.to_owned(),
            })
        });
        let opaque = opaque.split(['?', '#']).next().unwrap_or_default();
        Some(ParsedReferrer {
            scheme,
            opaque,
            web,
        })
    }
}

/// Whether `referrer` matches one entry of `allowedReferrers`.
pub fn referrer_allowed(allowed: &[String], referrer: &str) -> bool {
    allowed
        .iter()
        .filter_map(|p| ReferrerPattern::parse(p))
        .any(|p| p.matches(referrer))
}

// =========================================================================================
// Mobile apps
// =========================================================================================

/// A SHA-1 fingerprint as stored and compared: colons and spaces removed, uppercase.
pub fn normalize_sha1(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether the package and certificate fingerprint match one allowed application.
pub fn android_allowed(apps: &[AndroidApplication], package: &str, cert: &str) -> bool {
    let cert = normalize_sha1(cert);
    let package = package.trim();
    !cert.is_empty()
        && apps.iter().any(|a| {
            a.package_name.trim() == package && normalize_sha1(&a.sha1_fingerprint) == cert
        })
}

/// Whether the bundle id is one of the allowed ones (Apple's bundle ids are case-sensitive).
pub fn ios_allowed(bundle_ids: &[String], bundle_id: &str) -> bool {
    let b = bundle_id.trim();
    bundle_ids.iter().any(|id| id.trim() == b)
}

// =========================================================================================
// Tests
// =========================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use keyplane_core::{
        AndroidKeyRestrictions, BrowserKeyRestrictions, IosKeyRestrictions, ServerKeyRestrictions,
    };
    use proptest::prelude::*;

    const GL: &str = "generativelanguage.googleapis.com";
    const GEN: &str = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent";
    const STREAM: &str =
        "google.ai.generativelanguage.v1beta.GenerativeService.StreamGenerateContent";
    const COUNT: &str = "google.ai.generativelanguage.v1beta.GenerativeService.CountTokens";
    const LIST: &str = "google.ai.generativelanguage.v1beta.ModelService.ListModels";

    fn target(service: &str, methods: &[&str]) -> ApiTarget {
        ApiTarget {
            service: service.to_owned(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn api_targets_follow_googles_method_forms() {
        // (methods, method called, allowed)
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], GEN, true),
            (&[GEN], GEN, true),
            (&[GEN], STREAM, false),
            (&["GenerateContent"], GEN, true),
            (&["generatecontent"], GEN, true),
            (&["GenerateContent"], STREAM, false),
            (&["GenerativeService.GenerateContent"], GEN, true),
            (&["Generate*"], GEN, true),
            (&["Generate*"], STREAM, false),
            (&["*GenerateContent"], GEN, false),
            (&["Gen*Content"], GEN, false),
            (&["*"], LIST, true),
            (&["Count*"], COUNT, true),
            (&["Count*"], GEN, false),
            (&["generativelanguage.googleapis.com.Count*"], COUNT, true),
            (&["generativelanguage.googleapis.com.Count*"], GEN, false),
            (
                &["generativelanguage.googleapis.com.GenerateContent"],
                GEN,
                true,
            ),
            (&["aiplatform.googleapis.com.GenerateContent"], GEN, false),
            (
                &["google.ai.generativelanguage.v1beta.GenerativeService.*"],
                STREAM,
                true,
            ),
            (
                &["google.ai.generativelanguage.v1beta.GenerativeService.*"],
                LIST,
                false,
            ),
            (&["ModelService.*"], LIST, true),
            (&["ModelService.*"], GEN, false),
            (
                &["google.ai.generativelanguage.v1.GenerativeService.GenerateContent"],
                GEN,
                false,
            ),
            (&["ListModels", "Count*"], COUNT, true),
            (&["ListModels", "Count*"], GEN, false),
            (&[""], GEN, false),
            (&["Generat"], GEN, false),
        ];
        for (methods, called, want) in cases {
            let t = [target(GL, methods)];
            assert_eq!(
                api_targets_allow(&t, GL, called),
                *want,
                "methods {methods:?} calling {called}"
            );
        }
        // Service must match (case-insensitively); any target may allow.
        assert!(!api_targets_allow(
            &[target("aiplatform.googleapis.com", &[])],
            GL,
            GEN
        ));
        assert!(api_targets_allow(
            &[target("GenerativeLanguage.googleapis.com", &[])],
            GL,
            GEN
        ));
        assert!(api_targets_allow(
            &[
                target("aiplatform.googleapis.com", &[]),
                target(GL, &["Gen*"])
            ],
            GL,
            GEN
        ));
        assert!(!api_targets_allow(
            &[
                target(GL, &["ListModels"]),
                target("aiplatform.googleapis.com", &[])
            ],
            GL,
            GEN
        ));
        assert!(api_targets_allow(&[], GL, GEN));
    }

    #[test]
    fn ip_nets_parse_and_match() {
        let yes: &[(&str, &str)] = &[
            ("192.0.2.7", "192.0.2.7"),
            ("192.0.2.7/32", "192.0.2.7"),
            ("10.0.0.0/8", "10.255.1.2"),
            ("10.1.2.3/8", "10.9.9.9"),
            ("0.0.0.0/0", "203.0.113.9"),
            ("2001:db8::/32", "2001:db8:ffff::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
            ("::/0", "fe80::1"),
            ("192.0.2.7", "::ffff:192.0.2.7"),
            ("10.0.0.0/8", "::ffff:10.2.3.4"),
            ("::ffff:0:0/96", "198.51.100.1"),
        ];
        for (net, ip) in yes {
            let n: IpNet = net.parse().unwrap();
            assert!(n.contains(ip.parse().unwrap()), "{net} should contain {ip}");
        }
        let no: &[(&str, &str)] = &[
            ("192.0.2.7", "192.0.2.8"),
            ("10.0.0.0/8", "11.0.0.1"),
            ("2001:db8::/32", "2001:db9::1"),
            ("2001:db8::1", "2001:db8::2"),
            ("10.0.0.0/8", "::a00:1"),
            ("::1", "127.0.0.1"),
            ("0.0.0.0/0", "::1"),
        ];
        for (net, ip) in no {
            let n: IpNet = net.parse().unwrap();
            assert!(
                !n.contains(ip.parse().unwrap()),
                "{net} must not contain {ip}"
            );
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "x",
            "10.0.0.0/8/8",
            "1.2.3.4:80",
            "10.0.0.0/ 8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} must not parse");
        }
        // Unparsable entries in a key never match anything.
        assert!(!ip_allowed(
            &["nonsense".into()],
            "1.2.3.4".parse().unwrap()
        ));
    }

    #[test]
    fn forwarded_for_is_read_only_behind_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let known = |s: &str| CallerAddress::Known(ip(s));
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_address(Some(ip("192.0.2.1")), &["203.0.113.5"], &trusted),
            known("192.0.2.1")
        );
        assert_eq!(
            client_address(Some(ip("192.0.2.1")), &[], &[]),
            known("192.0.2.1")
        );
        // Trusted peer: rightmost untrusted entry.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &["203.0.113.5"], &trusted),
            known("203.0.113.5")
        );
        assert_eq!(
            client_address(
                Some(ip("127.0.0.1")),
                &["198.51.100.9, 203.0.113.5, 10.1.1.1"],
                &trusted
            ),
            known("203.0.113.5")
        );
        // Several headers are one list.
        assert_eq!(
            client_address(
                Some(ip("127.0.0.1")),
                &["198.51.100.9", "203.0.113.5"],
                &trusted
            ),
            known("203.0.113.5")
        );
        // Ports, brackets, IPv6.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &["[2001:db8::7]:443"], &trusted),
            known("2001:db8::7")
        );
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &["203.0.113.5:1234"], &trusted),
            known("203.0.113.5")
        );
        // Only trusted entries: the leftmost; no header: the peer.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &["10.0.0.2, 10.0.0.3"], &trusted),
            known("10.0.0.2")
        );
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &[], &trusted),
            known("127.0.0.1")
        );
        // Garbage stops the walk.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), &["203.0.113.5, unknown"], &trusted),
            CallerAddress::Unknown("unknown".into())
        );
        // Mapped peer addresses are IPv4.
        assert_eq!(
            client_address(Some(ip("::ffff:127.0.0.1")), &["203.0.113.5"], &trusted),
            known("203.0.113.5")
        );
        assert_eq!(
            client_address(None, &["203.0.113.5"], &trusted),
            CallerAddress::default()
        );
    }

    /// Google's documented examples (API keys: "Add website restrictions") and the nuances
    /// in gcp-control-plane.md §1.6.
    #[test]
    fn referrer_examples() {
        let cases: &[(&str, &str, bool)] = &[
            // A specific URL with an exact path.
            ("www.example.com/path", "https://www.example.com/path", true),
            ("www.example.com/path", "http://www.example.com/path", true),
            (
                "www.example.com/path",
                "https://www.example.com/path/",
                false,
            ),
            (
                "www.example.com/path",
                "https://www.example.com/path?q=1",
                true,
            ),
            (
                "www.example.com/path",
                "https://www.example.com/path#frag",
                true,
            ),
            (
                "www.example.com/path",
                "https://www.example.com/Path",
                false,
            ),
            ("www.example.com/path", "https://example.com/path", false),
            // Any URL in a single domain with no subdomains.
            ("example.com/*", "https://example.com/path", true),
            ("example.com/*", "https://example.com/path/path", true),
            ("example.com/*", "https://example.com/", true),
            ("example.com/*", "https://example.com", true),
            ("example.com/*", "http://example.com/x", true),
            ("example.com/*", "https://sub.example.com/x", false),
            ("example.com/*", "https://example.com.evil.com/x", false),
            ("example.com/*", "https://notexample.com/x", false),
            ("example.com/*", "https://EXAMPLE.com/x", true),
            // Any URL in a single subdomain.
            ("sub.example.com/*", "https://sub.example.com/path", true),
            ("sub.example.com/*", "https://other.example.com/path", false),
            // Any subdomain or path URLs in a single domain.
            ("*.example.com/*", "https://sub.example.com/path", true),
            ("*.example.com/*", "https://sub.sub.example.com/a/b", true),
            ("*.example.com/*", "https://example.com/path", false),
            ("*.example.com/*", "https://evilexample.com/", false),
            (
                "*.example.com/*",
                "https://sub.example.com.evil.org/",
                false,
            ),
            // A URL with a non-standard port.
            (
                "www.example.com:8000/*",
                "https://www.example.com:8000/path",
                true,
            ),
            (
                "www.example.com:8000/*",
                "https://www.example.com/path",
                false,
            ),
            (
                "www.example.com:8000/*",
                "https://www.example.com:8001/path",
                false,
            ),
            (
                "www.example.com/*",
                "https://www.example.com:8000/path",
                false,
            ),
            (
                "www.example.com/*",
                "https://www.example.com:443/path",
                true,
            ),
            ("www.example.com/*", "http://www.example.com:80/path", true),
            ("http://localhost:*/*", "http://localhost:5173/app", true),
            ("http://localhost:*/*", "http://localhost/app", true),
            ("http://localhost:*/*", "https://localhost:5173/app", false),
            // Scheme: none = http and https; given = only it.
            ("https://example.com/*", "https://example.com/x", true),
            ("https://example.com/*", "http://example.com/x", false),
            ("http://example.com/*", "http://example.com/x", true),
            ("example.com/*", "ftp://example.com/x", false),
            (
                "https://*.google.com",
                "https://mail.google.com/inbox",
                true,
            ),
            (
                "https://*.google.com",
                "http://mail.google.com/inbox",
                false,
            ),
            // Host only = host/*.
            ("www.example.com", "https://www.example.com/any/path", true),
            ("www.example.com", "https://www.example.com", true),
            (
                "www.example.com",
                "https://www.example.com.evil.com/",
                false,
            ),
            // Path prefixes.
            ("example.com/app/*", "https://example.com/app/page", true),
            ("example.com/app/*", "https://example.com/app/", true),
            ("example.com/app/*", "https://example.com/app", false),
            ("example.com/app/*", "https://example.com/other", false),
            // Special schemes.
            (
                "__file_url__//path/to/*",
                "file:///path/to/index.html",
                true,
            ),
            ("__file_url__//path/to/*", "file:///other/index.html", false),
            ("__file_url__//path/to/*", "https://path/to/x", false),
            // Userinfo is not the host.
            ("example.com/*", "https://user:pw@example.com/x", true),
            ("example.com/*", "https://example.com@evil.com/x", false),
            // Invalid patterns never match.
            ("example.*.com/*", "https://example.a.com/x", false),
            ("example.com/*/path", "https://example.com/a/path", false),
            ("*example.com/*", "https://wwwexample.com/x", false),
            ("", "https://example.com/", false),
            // Origin-only referrers, as modern browsers send them.
            ("example.com/", "https://example.com/", true),
            ("example.com/", "https://example.com/page", false),
            // IPv6 literal hosts.
            ("[::1]:*/*", "http://[::1]:8080/x", true),
        ];
        let mut failures = Vec::new();
        for (pattern, referrer, want) in cases {
            let got = referrer_allowed(&[(*pattern).to_owned()], referrer);
            if got != *want {
                failures.push(format!(
                    "{pattern:?} vs {referrer:?}: got {got}, want {want}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn android_and_ios() {
        let apps = vec![AndroidApplication {
            sha1_fingerprint: "DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09".into(),
            package_name: "com.example.app".into(),
        }];
        assert!(android_allowed(
            &apps,
            "com.example.app",
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
        ));
        assert!(android_allowed(
            &apps,
            "com.example.app",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        ));
        assert!(android_allowed(
            &apps,
            "com.example.app",
            "da:39:a3:ee:5e:6b:4b:0d:32:55:bf:ef:95:60:18:90:af:d8:07:09"
        ));
        assert!(!android_allowed(
            &apps,
            "com.example.other",
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
        ));
        assert!(!android_allowed(
            &apps,
            "com.example.app",
            "0000000000000000000000000000000000000000"
        ));
        assert!(!android_allowed(&apps, "com.example.app", ""));
        let ids = vec!["com.example.ios".to_owned()];
        assert!(ios_allowed(&ids, "com.example.ios"));
        assert!(!ios_allowed(&ids, "com.example.IOS"));
        assert!(!ios_allowed(&ids, "com.example"));
    }

    #[test]
    fn check_runs_targets_then_client_restriction() {
        let call = Call {
            service: GL,
            method: GEN,
        };
        let ok_client = Client {
            address: CallerAddress::Known("10.1.2.3".parse().unwrap()),
            ..Client::default()
        };
        let mut r = Restrictions {
            server_key_restrictions: Some(ServerKeyRestrictions {
                allowed_ips: vec!["10.0.0.0/8".into()],
            }),
            api_targets: vec![target("aiplatform.googleapis.com", &[])],
            ..Restrictions::default()
        };
        assert_eq!(check(&r, call, &ok_client), Err(Denied::Service));
        r.api_targets = vec![target(GL, &[])];
        assert_eq!(check(&r, call, &ok_client), Ok(()));
        let far = Client {
            address: CallerAddress::Known("192.0.2.1".parse().unwrap()),
            ..Client::default()
        };
        assert_eq!(check(&r, call, &far), Err(Denied::Ip("192.0.2.1".into())));
        assert_eq!(
            check(&r, call, &Client::default()),
            Err(Denied::Ip("unknown".into()))
        );

        let browser = Restrictions {
            browser_key_restrictions: Some(BrowserKeyRestrictions {
                allowed_referrers: vec!["example.com/*".into()],
            }),
            ..Restrictions::default()
        };
        assert_eq!(
            check(&browser, call, &Client::default()),
            Err(Denied::Referrer(None))
        );
        let blank = Client {
            referrer: Some("  "),
            ..Client::default()
        };
        assert_eq!(check(&browser, call, &blank), Err(Denied::Referrer(None)));
        let good = Client {
            referrer: Some("https://example.com/a"),
            ..Client::default()
        };
        assert_eq!(check(&browser, call, &good), Ok(()));

        let android = Restrictions {
            android_key_restrictions: Some(AndroidKeyRestrictions {
                allowed_applications: vec![AndroidApplication {
                    sha1_fingerprint: "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709".into(),
                    package_name: "com.example.app".into(),
                }],
            }),
            ..Restrictions::default()
        };
        let pkg_only = Client {
            android_package: Some("com.example.app"),
            ..Client::default()
        };
        assert_eq!(
            check(&android, call, &pkg_only),
            Err(Denied::Android(Some("com.example.app".into())))
        );
        assert_eq!(
            check(&android, call, &Client::default()),
            Err(Denied::Android(None))
        );

        let ios = Restrictions {
            ios_key_restrictions: Some(IosKeyRestrictions {
                allowed_bundle_ids: vec!["com.example.ios".into()],
            }),
            ..Restrictions::default()
        };
        assert_eq!(
            check(&ios, call, &Client::default()),
            Err(Denied::Ios(None))
        );
        let right = Client {
            ios_bundle_id: Some("com.example.ios"),
            ..Client::default()
        };
        assert_eq!(check(&ios, call, &right), Ok(()));

        // An empty allow-list allows nothing.
        let empty = Restrictions {
            server_key_restrictions: Some(ServerKeyRestrictions::default()),
            ..Restrictions::default()
        };
        assert!(check(&empty, call, &ok_client).is_err());
        // No restrictions at all.
        assert_eq!(
            check(&Restrictions::default(), call, &Client::default()),
            Ok(())
        );
    }

    /// `method_matches` as first written, allocating lowercase copies: the definition.
    fn method_matches_by_definition(pattern: &str, service: &str, method: &str) -> bool {
        let pattern = pattern.trim().to_ascii_lowercase();
        let full = method.trim().to_ascii_lowercase();
        let service_prefix = format!("{}.", service.trim().to_ascii_lowercase());
        if pattern.is_empty() || full.is_empty() {
            return false;
        }
        let pattern = match pattern.strip_prefix(&service_prefix) {
            Some(rest) if !rest.is_empty() => rest,
            _ => pattern.as_str(),
        };
        let simple = full.rsplit('.').next().unwrap_or(&full);
        let tails = std::iter::once(full.as_str())
            .chain(full.match_indices('.').map(|(i, _)| &full[i + 1..]));
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                if prefix.contains('*') {
                    false
                } else if prefix.contains('.') {
                    tails.clone().any(|t| t.starts_with(prefix))
                } else {
                    simple.starts_with(prefix)
                }
            }
            None => !pattern.contains('*') && tails.clone().any(|t| t == pattern),
        }
    }

    // --- properties -----------------------------------------------------------------------

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
    }

    fn domain() -> impl Strategy<Value = String> {
        (
            label(),
            prop::sample::select(vec!["com", "org", "dev", "co.uk"]),
        )
            .prop_map(|(l, tld)| format!("{l}.{tld}"))
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9._~-]{1,8}", 0..4).prop_map(|segs| {
            let mut p = String::from("/");
            p.push_str(&segs.join("/"));
            p
        })
    }

    fn scheme() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["http", "https"])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A v4 range contains exactly the addresses that share its first `prefix` bits.
        #[test]
        fn v4_cidr_contains_exactly_its_addresses(net in any::<u32>(), prefix in 0u8..=32, ip in any::<u32>()) {
            let n: IpNet = format!("{}/{prefix}", Ipv4Addr::from(net)).parse().unwrap();
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            let want = (net & mask) == (ip & mask);
            prop_assert_eq!(n.contains(IpAddr::V4(Ipv4Addr::from(ip))), want);
            // The same caller seen as an IPv4-mapped IPv6 address.
            prop_assert_eq!(n.contains(IpAddr::V6(Ipv4Addr::from(ip).to_ipv6_mapped())), want);
            // The network's own first and last addresses are inside.
            prop_assert!(n.contains(IpAddr::V4(Ipv4Addr::from(net & mask))));
            prop_assert!(n.contains(IpAddr::V4(Ipv4Addr::from((net & mask) | !mask))));
        }

        /// The same for IPv6, and families never mix.
        #[test]
        fn v6_cidr_contains_exactly_its_addresses(net in any::<u128>(), prefix in 0u8..=128, ip in any::<u128>(), v4 in any::<u32>()) {
            let n: IpNet = format!("{}/{prefix}", Ipv6Addr::from(net)).parse().unwrap();
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            let caller = Ipv6Addr::from(ip);
            let want = (net & mask) == (ip & mask);
            // A mapped caller is compared as IPv4 mapped back: same bits, same answer.
            prop_assert_eq!(n.contains(IpAddr::V6(caller)), want);
            prop_assert!(n.contains(IpAddr::V6(Ipv6Addr::from(net & mask))));
            prop_assert!(n.contains(IpAddr::V6(Ipv6Addr::from((net & mask) | !mask))));
            let v4net: IpNet = format!("{}/32", Ipv4Addr::from(v4)).parse().unwrap();
            if Ipv6Addr::from(ip).to_ipv4_mapped().is_none() {
                prop_assert!(!v4net.contains(IpAddr::V6(caller)));
            }
        }

        /// A single address matches itself and nothing else.
        #[test]
        fn single_address_matches_only_itself(a in any::<u32>(), b in any::<u32>()) {
            let allowed = vec![Ipv4Addr::from(a).to_string()];
            prop_assert_eq!(ip_allowed(&allowed, IpAddr::V4(Ipv4Addr::from(b))), a == b);
        }

        /// The in-place matcher answers as the plain lowercase-and-compare definition.
        #[test]
        fn method_matches_its_definition(
            pattern in "[ ]?(generativelanguage\\.googleapis\\.com\\.|GenerativeLanguage\\.googleapis\\.COM\\.)?[a-zA-Z.*]{0,20}[ ]?",
            method in "[a-zA-Z.]{0,30}",
            svc in prop::sample::select(vec![GL, "GenerativeLanguage.googleapis.com", "", "x"]),
        ) {
            prop_assert_eq!(method_matches(&pattern, svc, &method), method_matches_by_definition(&pattern, svc, &method));
            prop_assert_eq!(method_matches(&pattern, svc, GEN), method_matches_by_definition(&pattern, svc, GEN));
        }

        /// The quick IPv4 reader accepts exactly what the standard one does, with the same value.
        #[test]
        fn quick_ipv4_agrees_with_std(s in "[0-9.]{0,17}", a in any::<u32>()) {
            prop_assert_eq!(parse_ipv4(&s), s.parse::<Ipv4Addr>().ok());
            let text = Ipv4Addr::from(a).to_string();
            prop_assert_eq!(parse_ipv4(&text), Some(Ipv4Addr::from(a)));
        }

        /// Compiled restrictions decide as the plain ones they were made from.
        #[test]
        fn compiled_restrictions_decide_as_plain(
            ips in prop::collection::vec(
                prop_oneof![
                    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| format!("{}/{p}", Ipv4Addr::from(a))),
                    any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_string()),
                    (any::<u128>(), 0u8..=128).prop_map(|(a, p)| format!("{}/{p}", Ipv6Addr::from(a))),
                    "[0-9a-f.:/ ]{0,12}",
                ],
                0..5,
            ),
            caller in any::<u32>(),
            near in any::<bool>(),
        ) {
            let r = Restrictions {
                server_key_restrictions: Some(ServerKeyRestrictions { allowed_ips: ips.clone() }),
                api_targets: vec![target(GL, &["Generate*"])],
                ..Restrictions::default()
            };
            let compiled = CompiledRestrictions::new(r.clone());
            // A caller inside the first range half the time, anywhere otherwise.
            let ip = match ips.first().and_then(|a| a.parse::<IpNet>().ok()) {
                Some(n) if near => n.addr(),
                _ => IpAddr::V4(Ipv4Addr::from(caller)),
            };
            let client = Client { address: CallerAddress::Known(ip), ..Client::default() };
            for method in [GEN, "google.ai.generativelanguage.v1beta.ModelService.ListModels"] {
                let call = Call { service: GL, method };
                prop_assert_eq!(check(&compiled, call, &client), check(&r, call, &client));
                prop_assert_eq!(
                    check(&std::sync::Arc::new(compiled.clone()), call, &client),
                    check(&r, call, &client)
                );
            }
            prop_assert_eq!(&*compiled, &r);
        }

        /// Parsing and matching never panic on arbitrary input.
        #[test]
        fn matchers_never_panic(p in ".{0,40}", r in ".{0,60}", m in ".{0,40}") {
            let _ = ReferrerPattern::parse(&p).map(|pat| pat.matches(&r));
            let _ = p.parse::<IpNet>();
            let _ = parse_forwarded_address(&r);
            let _ = method_matches(&p, GL, &m);
        }

        /// `*.domain/*`: every subdomain, any scheme of http/https, any path; never the apex,
        /// never a look-alike.
        #[test]
        fn subdomain_wildcard(sub in label(), d in domain(), p in path(), s in scheme()) {
            let pat = vec![format!("*.{d}/*")];
            let sub_referrer = format!("{s}://{sub}.{d}{p}");
            let apex_referrer = format!("{s}://{d}{p}");
            let lookalike_a = format!("{s}://{sub}{d}{p}");
            let lookalike_b = format!("{s}://{sub}.{d}.evil.net{p}");
            prop_assert!(referrer_allowed(&pat, &sub_referrer));
            prop_assert!(!referrer_allowed(&pat, &apex_referrer));
            prop_assert!(!referrer_allowed(&pat, &lookalike_a));
            prop_assert!(!referrer_allowed(&pat, &lookalike_b));
        }

        /// `domain/*` and bare `domain`: the host itself, http and https, any path and query,
        /// only the default port; never a subdomain.
        #[test]
        fn single_domain(
            sub in label(),
            d in domain(),
            p in path(),
            s in scheme(),
            q in "[a-z0-9=&]{0,10}",
            port in 1u16..,
        ) {
            let default = if s == "http" { 80 } else { 443 };
            let plain = format!("{s}://{d}{p}");
            let query = format!("{s}://{d}{p}?{q}");
            let subdomain = format!("{s}://{sub}.{d}{p}");
            let with_port = format!("{s}://{d}:{port}{p}");
            for pat in [format!("{d}/*"), d.clone()] {
                let pat = vec![pat];
                prop_assert!(referrer_allowed(&pat, &plain));
                prop_assert!(referrer_allowed(&pat, &query));
                prop_assert!(!referrer_allowed(&pat, &subdomain));
                prop_assert_eq!(referrer_allowed(&pat, &with_port), port == default);
            }
        }

        /// A scheme in the pattern pins it.
        #[test]
        fn scheme_pins(d in domain(), p in path()) {
            let pat = vec![format!("https://{d}/*")];
            let https = format!("https://{d}{p}");
            let http = format!("http://{d}{p}");
            prop_assert!(referrer_allowed(&pat, &https));
            prop_assert!(!referrer_allowed(&pat, &http));
        }

        /// An exact path matches that path only (trailing slash matters; query ignored).
        #[test]
        fn exact_path(d in domain(), p in path(), other in path(), s in scheme()) {
            prop_assume!(p != "/");
            let pat = vec![format!("{d}{p}")];
            let same = format!("{s}://{d}{p}");
            let query = format!("{s}://{d}{p}?x=1");
            let slash = format!("{s}://{d}{p}/");
            let elsewhere = format!("{s}://{d}{other}");
            prop_assert!(referrer_allowed(&pat, &same));
            prop_assert!(referrer_allowed(&pat, &query));
            prop_assert!(!referrer_allowed(&pat, &slash));
            prop_assert_eq!(referrer_allowed(&pat, &elsewhere), other == p);
        }

        /// A path prefix matches everything below it and nothing beside it.
        #[test]
        fn path_prefix(d in domain(), base in "[a-z]{1,6}", rest in path(), other in "[a-z]{1,6}") {
            let pat = vec![format!("{d}/{base}/*")];
            // `rest` starts with "/", so this is /base/...; `/base` alone is not below.
            let below = format!("https://{d}/{base}{rest}");
            let beside = format!("https://{d}/{other}/x");
            prop_assert!(referrer_allowed(&pat, &below));
            prop_assert_eq!(referrer_allowed(&pat, &beside), other == base);
        }
    }
}

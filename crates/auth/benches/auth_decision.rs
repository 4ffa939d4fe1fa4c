//! The data plane's auth decision alone: credential string to allow/deny, as
//! `crates/server/src/dataplane/access.rs` makes it for an API key (`authorize` then
//! `check_restrictions`, then `dataplane::admit`): trim and well-formedness check, HMAC
//! lookup hash, the snapshot's decision (key known, project has the service enabled), the
//! caller's address, the key's restrictions (API targets and a server-IP CIDR list), then
//! the quota: the clock read and one call counted in the (project, model) window, against
//! limits the run never reaches.
//!
//! Cases, each at 1 and at 1,000,000 keys in the snapshot:
//! - `allow_restricted`: a valid key restricted to the Gemini API's generate methods and to
//!   a list of server IPs / CIDR ranges, called from an allowed address;
//! - `allow_unrestricted`: a valid key without restrictions;
//! - `deny_unknown_key`: a well-formed key the snapshot does not hold;
//! - `deny_invalid_key`: a string that is not a key at all (answered before any hashing).
//!
//! Requests are spread over 1,000 keys, as in the load benchmark, so a lookup is not
//! always the same hot cache line. Not measured: reading the HTTP headers (axum's
//! `HeaderMap`), formatting the RPC method name and recording the usage bucket, which
//! happen outside keyplane-auth.
//!
//! `parts/*` at 1,000,000 keys splits the allowed decision into its steps.
//!
//! Set `AUTH_BENCH_KEYS` (comma-separated) to change the snapshot sizes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use keyplane_auth::quota::{QuotaTable, Quotas};
use keyplane_auth::restrictions::{self, Call, CallerAddress, Client, CompiledRestrictions, IpNet};
use keyplane_auth::{KeyDenied, KeyEntry, Snapshot};
use keyplane_core::quota::{Limits, Tier};
use keyplane_core::{
    now, services, ApiKey, ApiTarget, PlainKey, Restrictions, ServerKeyRestrictions, ServerSecret,
    ServiceState,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICE: &str = services::GENERATIVE_LANGUAGE;
const METHOD: &str = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent";
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// How many distinct keys the requests cycle through.
const SPREAD: usize = 1000;
const PROJECTS: i64 = 100;

/// Why the decision said no (the data plane turns each into its google.rpc.Status).
#[derive(Debug)]
enum Refusal {
    /// 400 API_KEY_INVALID: malformed, unknown or deleted.
    Invalid,
    /// 403 SERVICE_DISABLED.
    ServiceDisabled,
    /// 403 API_KEY_*_BLOCKED.
    Restricted(restrictions::Denied),
    /// 429 RESOURCE_EXHAUSTED.
    Quota,
}

const MODEL: &str = "gemini-2.5-flash";

/// Every tier with limits no run reaches: each call is counted, none refused.
fn quotas() -> Quotas {
    let mut table = QuotaTable::default();
    let huge = Limits {
        rpm: Some(u64::MAX / 2),
        tpm: Some(u64::MAX / 2),
        rpd: Some(u64::MAX / 2),
    };
    for t in Tier::ALL {
        table.set_tier(t, huge);
    }
    Quotas::new(table)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The request's side of the decision: what access.rs reads from the request.
struct Request<'a> {
    credential: &'a str,
    peer: IpAddr,
    trusted_proxies: &'a [IpNet],
}

/// The decision, step for step as `access::authorize` and `access::check_restrictions`.
/// Not inlined, so a profiler (callgrind's `--toggle-collect=*decide*`) can count it.
#[inline(never)]
fn decide(
    secret: &ServerSecret,
    snapshot: &Snapshot,
    quotas: &Quotas,
    req: &Request<'_>,
) -> Result<Arc<KeyEntry>, Refusal> {
    let plain = PlainKey::from_caller(req.credential);
    if !plain.is_well_formed() {
        return Err(Refusal::Invalid);
    }
    let hash = secret.lookup_hash(&plain);
    let permit = match snapshot.check_key(&hash, SERVICE) {
        Ok(permit) => permit,
        Err(KeyDenied::Invalid) => return Err(Refusal::Invalid),
        Err(KeyDenied::ServiceDisabled { .. }) => return Err(Refusal::ServiceDisabled),
    };
    let r = &permit.key.restrictions;
    let unrestricted = r.api_targets.is_empty()
        && r.server_key_restrictions.is_none()
        && r.browser_key_restrictions.is_none()
        && r.android_key_restrictions.is_none()
        && r.ios_key_restrictions.is_none();
    if !unrestricted {
        let client = Client {
            address: if r.server_key_restrictions.is_some() {
                restrictions::client_address(Some(req.peer), &[], req.trusted_proxies)
            } else {
                CallerAddress::default()
            },
            ..Client::default()
        };
        let call = Call {
            service: SERVICE,
            method: METHOD,
        };
        restrictions::check(r, call, &client).map_err(Refusal::Restricted)?;
    }
    quotas
        .admit(permit.key.project_number, MODEL, now_ms())
        .map_err(|_| Refusal::Quota)?;
    Ok(permit.key)
}

/// A restricted key as a platform team sets one up: the Gemini API's generate methods
/// only, from the team's server addresses.
fn restricted() -> Restrictions {
    Restrictions {
        api_targets: vec![ApiTarget {
            service: SERVICE.to_owned(),
            methods: vec![
                "CountTokens".to_owned(),
                "GenerativeService.StreamGenerateContent".to_owned(),
                "Generate*".to_owned(),
            ],
        }],
        server_key_restrictions: Some(ServerKeyRestrictions {
            allowed_ips: vec![
                "203.0.113.7".to_owned(),
                "2001:db8:1234::/48".to_owned(),
                "198.51.100.0/24".to_owned(),
                "192.168.0.0/16".to_owned(),
                "10.0.0.0/8".to_owned(),
            ],
        }),
        ..Restrictions::default()
    }
}

/// A deterministic stream of well-formed key strings (not `PlainKey::generate`, whose OS
/// randomness would make building a million keys slow for nothing).
struct KeyStrings(u64);

impl KeyStrings {
    fn next_key(&mut self) -> String {
        let mut s = String::with_capacity(39);
        s.push_str("AIza");
        for _ in 0..35 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            s.push(ALPHABET[(z & 63) as usize] as char);
        }
        s
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A snapshot of `n` keys over `PROJECTS` projects (all with the Gemini API enabled).
/// Every even key is restricted, every odd one is not. Returns the snapshot and up to
/// `SPREAD` restricted and unrestricted key strings it holds.
struct Fixture {
    snapshot: Snapshot,
    restricted_keys: Vec<String>,
    unrestricted_keys: Vec<String>,
}

fn fixture(secret: &ServerSecret, n: usize) -> Fixture {
    let snapshot = Snapshot::new();
    for p in 0..PROJECTS {
        snapshot.set_service(&ServiceState {
            project_number: 1_000_000 + p,
            service: SERVICE.to_owned(),
            enabled: true,
            update_time: now(),
        });
    }
    let t = now();
    let mut template = ApiKey {
        project_number: 0,
        key_id: String::new(),
        uid: String::new(),
        display_name: String::new(),
        lookup_hash: Vec::new(),
        ciphertext: Vec::new(),
        last4: String::new(),
        restrictions: Restrictions::default(),
        annotations: Default::default(),
        service_account_email: None,
        create_time: t,
        update_time: t,
        delete_time: None,
        etag: String::new(),
    };
    let limits = restricted();
    let mut strings = KeyStrings(0x5EED);
    let (mut restricted_keys, mut unrestricted_keys) = (Vec::new(), Vec::new());
    // Which keys the requests use: spread evenly over the whole snapshot.
    let stride = (n / (2 * SPREAD)).max(1);
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        let key = strings.next_key();
        let plain = PlainKey::from_caller(&key);
        template.project_number = 1_000_000 + (i as i64 % PROJECTS);
        template.key_id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        template.lookup_hash = secret.lookup_hash(&plain).to_vec();
        template.restrictions = if i % 2 == 0 {
            limits.clone()
        } else {
            Restrictions::default()
        };
        snapshot.upsert_key(&template);
        if (i / 2) % stride == 0 {
            if i % 2 == 0 && restricted_keys.len() < SPREAD {
                restricted_keys.push(key);
            } else if i % 2 == 1 && unrestricted_keys.len() < SPREAD {
                unrestricted_keys.push(key);
            }
        }
    }
    if let (Some(before), Some(after), true) = (before, rss_bytes(), n >= 10_000) {
        eprintln!(
            "snapshot: {n} keys loaded in {:.2?}, resident memory +{:.1} MiB, ~{} bytes/key",
            started.elapsed(),
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
            after.saturating_sub(before) / n as u64,
        );
    }
    assert_eq!(snapshot.key_count(), n);
    Fixture {
        snapshot,
        restricted_keys,
        unrestricted_keys,
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("AUTH_BENCH_KEYS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().replace('_', "").parse().expect("AUTH_BENCH_KEYS"))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 1_000_000])
}

/// Runs `f` over the request credentials in turn.
fn cycle<'a>(creds: &'a [String]) -> impl FnMut() -> &'a str {
    let mut i = 0;
    move || {
        i = if i + 1 == creds.len() { 0 } else { i + 1 };
        creds[i].as_str()
    }
}

fn bench(c: &mut Criterion) {
    let secret = ServerSecret::from_bytes(&[7u8; 32]).expect("32 bytes");
    let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().expect("a range")];
    let peer: IpAddr = "10.20.30.40".parse().expect("an address");
    let far: IpAddr = "192.0.2.1".parse().expect("an address");
    let mut unknown = KeyStrings(0xDEAD_BEEF);
    let unknown_keys: Vec<String> = (0..SPREAD).map(|_| unknown.next_key()).collect();
    let invalid_keys: Vec<String> = vec![
        "AIzaTooShort".to_owned(),
        "AIzaSy!nvalid$characters-in-the-body-xx".to_owned(),
        "sk-not-a-gemini-key-at-all-000000000000".to_owned(),
    ];

    let mut group = c.benchmark_group("auth_decision");
    for n in sizes() {
        let fx = fixture(&secret, n);
        let snap = &fx.snapshot;
        let quotas = quotas();
        let request = |credential| Request {
            credential,
            peer,
            trusted_proxies: &trusted,
        };
        // Sanity: every case decides as its name says before it is timed.
        for k in &fx.restricted_keys {
            assert!(decide(&secret, snap, &quotas, &request(k)).is_ok());
            let from_far = Request {
                peer: far,
                ..request(k)
            };
            assert!(matches!(
                decide(&secret, snap, &quotas, &from_far),
                Err(Refusal::Restricted(restrictions::Denied::Ip(_)))
            ));
        }
        for k in &fx.unrestricted_keys {
            assert!(decide(&secret, snap, &quotas, &request(k)).is_ok());
        }
        for k in &unknown_keys {
            assert!(matches!(
                decide(&secret, snap, &quotas, &request(k)),
                Err(Refusal::Invalid)
            ));
        }
        for k in &invalid_keys {
            assert!(matches!(
                decide(&secret, snap, &quotas, &request(k)),
                Err(Refusal::Invalid)
            ));
        }

        let cases: [(&str, &[String]); 4] = [
            ("allow_restricted", &fx.restricted_keys),
            ("allow_unrestricted", &fx.unrestricted_keys),
            ("deny_unknown_key", &unknown_keys),
            ("deny_invalid_key", &invalid_keys),
        ];
        for (name, creds) in cases {
            if creds.is_empty() {
                continue; // a one-key snapshot holds no unrestricted key
            }
            let mut next = cycle(creds);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| decide(&secret, snap, &quotas, &request(black_box(next()))).is_ok())
            });
        }

        if n >= 1_000_000 {
            // The allowed decision's steps, on their own.
            let mut next = cycle(&fx.restricted_keys);
            group.bench_function(BenchmarkId::new("part_lookup_hash", n), |b| {
                b.iter(|| secret.lookup_hash(&PlainKey::from_caller(black_box(next()))))
            });
            let hashes: Vec<[u8; 32]> = fx
                .restricted_keys
                .iter()
                .map(|k| secret.lookup_hash(&PlainKey::from_caller(k)))
                .collect();
            let mut i = 0;
            group.bench_function(BenchmarkId::new("part_check_key", n), |b| {
                b.iter(|| {
                    i = (i + 1) % hashes.len();
                    snap.check_key(black_box(&hashes[i]), SERVICE).is_ok()
                })
            });
            // As the snapshot holds them: compiled and shared.
            let limits = CompiledRestrictions::new(restricted());
            let client = Client {
                address: CallerAddress::Known(peer),
                ..Client::default()
            };
            let call = Call {
                service: SERVICE,
                method: METHOD,
            };
            group.bench_function(BenchmarkId::new("part_restrictions", n), |b| {
                b.iter(|| restrictions::check(black_box(&limits), call, &client).is_ok())
            });
            let mut project = 0;
            group.bench_function(BenchmarkId::new("part_quota", n), |b| {
                b.iter(|| {
                    project = (project + 1) % PROJECTS;
                    quotas
                        .admit(black_box(1_000_000 + project), MODEL, now_ms())
                        .is_ok()
                })
            });
        }
        drop(fx);
    }
    group.finish();
}

fn config() -> Criterion {
    let secs = |var: &str, default: f64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(Duration::from_secs_f64(default), Duration::from_secs_f64)
    };
    Criterion::default()
        .warm_up_time(secs("AUTH_BENCH_WARMUP", 1.0))
        .measurement_time(secs("AUTH_BENCH_MEASURE", 3.0))
        .sample_size(50)
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);

//! loadgen: a closed-loop HTTP/1.1 load generator with one API key per request.
//!
//! `--connections` keep-alive connections each send a request, read the whole answer and
//! send the next, for `--warmup` seconds (not counted) then `--duration` seconds, or for
//! `--requests` requests in all. Keys come from `--keys` (one a line), used round-robin
//! in file order and sent as `x-goog-api-key`; with `--invalid-ratio R` a fraction R of
//! requests carry a well-formed key that exists nowhere instead. `--stream` also records
//! time to first body byte and to the end of the body. `--pipeline N` sends each
//! connection's requests N at a time in one write (HTTP/1.1 pipelining) and reads the N
//! answers back: the client's cost per request falls, so a fast server is what limits the
//! rate (each request's latency runs from its batch's write to the end of its answer).
//!
//! Prints one JSON line: rps, latency percentiles in microseconds (overall and per key
//! kind), ttfb/ttlb percentiles when streaming, and status-code counts. Key strings are
//! never printed.

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Closed-loop HTTP/1.1 load generator rotating API keys")]
struct Args {
    /// Full URL, e.g. http://127.0.0.1:8080/v1beta/models/gemini-2.5-flash:generateContent
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request body file (default: a one-line generateContent request; none for GET).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Keys, one a line; without it no key is sent.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Use only the first N keys of the file.
    #[arg(long)]
    keys_limit: Option<usize>,
    /// Skip the first N keys of the file.
    #[arg(long, default_value_t = 0)]
    keys_offset: usize,
    /// Fraction of requests sent with a well-formed key that exists nowhere.
    #[arg(long, default_value_t = 0.0)]
    invalid_ratio: f64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Send exactly this many requests (no warm-up, every one measured) instead of a
    /// fixed duration; with one connection, key i of the file is used by request i.
    #[arg(long)]
    requests: Option<u64>,
    /// Record time to first byte and to last byte of the body.
    #[arg(long)]
    stream: bool,
    /// Requests written at a time on each connection (1: one, and its answer read, before
    /// the next). Not with --stream.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A name copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

const DEFAULT_BODY: &str =
    r#"{"contents":[{"parts":[{"text":"Explain how AI works in a few words"}]}]}"#;
const KEY_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Invalid keys are drawn from a pool of this many.
const INVALID_POOL: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    Invalid,
}

struct Sample {
    kind: Kind,
    status: u16,
    latency_us: u32,
    ttfb_us: u32,
}

#[derive(Default)]
struct ConnResult {
    samples: Vec<Sample>,
    errors: u64,
}

impl ConnResult {
    /// A request sent at `t0` and answered by `done` (its first body byte at `t0 + ttfb`),
    /// kept when it falls inside the measured window.
    fn record(
        &mut self,
        plan: &Plan,
        kind: Kind,
        status: u16,
        t0: Instant,
        ttfb: Option<Duration>,
        done: Instant,
    ) {
        if t0 >= plan.measure_from && done <= plan.stop_at {
            let total = done - t0;
            self.samples.push(Sample {
                kind,
                status,
                latency_us: micros(total),
                ttfb_us: micros(ttfb.unwrap_or(total)),
            });
        }
    }
}

struct Plan {
    uri: Uri,
    host: HeaderValue,
    method: Method,
    body: Bytes,
    valid: Vec<HeaderValue>,
    invalid: Vec<HeaderValue>,
    invalid_ratio: f64,
    stream: bool,
    /// Requests started so far (round-robin position; stop condition with `limit`).
    started: AtomicU64,
    limit: Option<u64>,
    measure_from: Instant,
    stop_at: Instant,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    anyhow::ensure!(args.pipeline > 0, "--pipeline must be positive");
    anyhow::ensure!(
        args.pipeline == 1 || !args.stream,
        "--pipeline is not for --stream"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.invalid_ratio),
        "--invalid-ratio must be between 0 and 1"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let out = rt.block_on(run(args))?;
    println!("{out}");
    Ok(())
}

fn random_invalid_key(rng: &mut StdRng) -> String {
    let mut s = String::from("AIza");
    s.extend((0..35).map(|_| KEY_ALPHABET[rng.gen_range(0..64)] as char));
    s
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let uri: Uri = args.url.parse()?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "only http:// URLs");
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("the URL has no host"))?
        .clone();
    let method: Method = args.method.parse()?;
    let body = match &args.body_file {
        Some(p) => Bytes::from(std::fs::read(p)?),
        None if method == Method::GET => Bytes::new(),
        None => Bytes::from_static(DEFAULT_BODY.as_bytes()),
    };
    let valid: Vec<HeaderValue> = match &args.keys {
        Some(p) => std::fs::read_to_string(p)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .skip(args.keys_offset)
            .take(args.keys_limit.unwrap_or(usize::MAX))
            .map(HeaderValue::from_str)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        args.keys.is_none() || !valid.is_empty(),
        "the key file holds no keys"
    );
    let mut rng = StdRng::seed_from_u64(0x6b65_7970_6c61_6e65);
    let invalid = if args.invalid_ratio > 0.0 {
        (0..INVALID_POOL)
            .map(|_| HeaderValue::from_str(&random_invalid_key(&mut rng)))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };

    let start = Instant::now();
    let (measure_from, stop_at) = match args.requests {
        Some(_) => (start, start + Duration::from_secs(3600)),
        None => {
            let from = start + Duration::from_secs_f64(args.warmup);
            (from, from + Duration::from_secs_f64(args.duration))
        }
    };
    // Sent in origin form (`POST /v1beta/...` with a `host` header), as SDKs and browsers
    // send it; hyper's client connection would send the URI as given, in absolute form.
    let origin: Uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let plan = Arc::new(Plan {
        host: HeaderValue::from_str(authority.as_str())?,
        uri: origin,
        method,
        body,
        valid,
        invalid,
        invalid_ratio: args.invalid_ratio,
        stream: args.stream,
        started: AtomicU64::new(0),
        limit: args.requests,
        measure_from,
        stop_at,
    });
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let plan = plan.clone();
        let addr = authority.to_string();
        let pipeline = args.pipeline;
        tasks.push(tokio::spawn(async move {
            if pipeline > 1 {
                pipelined(plan, addr, c as u64, pipeline).await
            } else {
                connection(plan, addr, c as u64).await
            }
        }));
    }
    let mut all = ConnResult::default();
    for t in tasks {
        let r = t.await?;
        all.samples.extend(r.samples);
        all.errors += r.errors;
    }
    let seconds = match args.requests {
        Some(_) => start.elapsed().as_secs_f64(),
        None => args.duration,
    };
    let mut out = report(&args, &plan, &all, seconds);
    // Near 100: the load generator, not the server, set the rate.
    let busy = own_cpu_seconds() / start.elapsed().as_secs_f64();
    out["client_cpu_percent"] = json!((busy * 1000.0).round() / 10.0);
    Ok(out)
}

/// A connection to `addr` (`TCP_NODELAY`), tried every 50 ms until the run is over (`None`
/// then); each failed attempt counts as an error.
async fn connect(
    plan: &Plan,
    addr: &str,
    result: &mut ConnResult,
) -> Option<tokio::net::TcpStream> {
    while Instant::now() < plan.stop_at {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Err(_) => {
                result.errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    None
}

async fn connection(plan: Arc<Plan>, addr: String, id: u64) -> ConnResult {
    let mut result = ConnResult::default();
    let mut rng = StdRng::seed_from_u64(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    'reconnect: loop {
        let Some(stream) = connect(&plan, &addr, &mut result).await else {
            break;
        };
        let (mut sender, conn) = match http1::handshake(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(_) => {
                result.errors += 1;
                continue;
            }
        };
        tokio::spawn(conn);
        loop {
            let n = plan.started.fetch_add(1, Ordering::Relaxed);
            if plan.limit.is_some_and(|l| n >= l) || Instant::now() >= plan.stop_at {
                break 'reconnect;
            }
            let (kind, key) = plan.pick(n, &mut rng);
            let mut req = Request::new(Full::new(plan.body.clone()));
            *req.method_mut() = plan.method.clone();
            *req.uri_mut() = plan.uri.clone();
            let h = req.headers_mut();
            h.insert(header::HOST, plan.host.clone());
            if !plan.body.is_empty() {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            if let Some(k) = key {
                h.insert("x-goog-api-key", k.clone());
            }
            if sender.ready().await.is_err() {
                result.errors += 1;
                continue 'reconnect;
            }
            let t0 = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    result.errors += 1;
                    continue 'reconnect;
                }
            };
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut ttfb = None;
            let mut broken = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if ttfb.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) {
                            ttfb = Some(t0.elapsed());
                        }
                    }
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            let done = Instant::now();
            if broken {
                result.errors += 1;
                continue 'reconnect;
            }
            result.record(&plan, kind, status, t0, ttfb, done);
        }
    }
    result
}

impl Plan {
    /// The next request's key: valid ones round-robin, invalid ones at random.
    fn pick<'a>(&'a self, n: u64, rng: &mut StdRng) -> (Kind, Option<&'a HeaderValue>) {
        if !self.invalid.is_empty()
            && (self.valid.is_empty() || rng.gen::<f64>() < self.invalid_ratio)
        {
            let i = rng.gen_range(0..self.invalid.len());
            (Kind::Invalid, Some(&self.invalid[i]))
        } else if self.valid.is_empty() {
            (Kind::Valid, None)
        } else {
            (
                Kind::Valid,
                Some(&self.valid[(n % self.valid.len() as u64) as usize]),
            )
        }
    }

    /// A request as hyper's client writes it, with `key`.
    fn render(&self, key: Option<&HeaderValue>, out: &mut Vec<u8>) {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(format!("{} {target} HTTP/1.1\r\nhost: ", self.method).as_bytes());
        out.extend_from_slice(self.host.as_bytes());
        if !self.body.is_empty() {
            out.extend_from_slice(b"\r\ncontent-type: application/json");
        }
        if let Some(key) = key {
            out.extend_from_slice(b"\r\nx-goog-api-key: ");
            out.extend_from_slice(key.as_bytes());
        }
        if !self.body.is_empty() || self.method != Method::GET {
            out.extend_from_slice(format!("\r\ncontent-length: {}", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// One connection sending `depth` requests at a time (`--pipeline`). Answers must carry
/// `content-length`; one that does not, or a connection that breaks, counts as an error
/// and the connection is made again.
async fn pipelined(plan: Arc<Plan>, addr: String, id: u64, depth: usize) -> ConnResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut result = ConnResult::default();
    let mut rng = StdRng::seed_from_u64(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let mut out = Vec::new();
    let mut kinds = Vec::with_capacity(depth);
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    'reconnect: loop {
        let Some(mut stream) = connect(&plan, &addr, &mut result).await else {
            break;
        };
        buf.clear();
        loop {
            let n = plan.started.fetch_add(depth as u64, Ordering::Relaxed);
            if plan.limit.is_some_and(|l| n >= l) || Instant::now() >= plan.stop_at {
                break 'reconnect;
            }
            out.clear();
            kinds.clear();
            for i in 0..depth as u64 {
                let (kind, key) = plan.pick(n + i, &mut rng);
                kinds.push(kind);
                plan.render(key, &mut out);
            }
            let t0 = Instant::now();
            if stream.write_all(&out).await.is_err() {
                result.errors += 1;
                continue 'reconnect;
            }
            for &kind in &kinds {
                let (status, len) = loop {
                    match answer_length(&buf) {
                        Ok(Some(done)) if buf.len() >= done.1 => break done,
                        Ok(_) => {}
                        Err(()) => {
                            result.errors += 1;
                            continue 'reconnect;
                        }
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => {
                            result.errors += 1;
                            continue 'reconnect;
                        }
                        Ok(_) => {}
                    }
                };
                bytes::Buf::advance(&mut buf, len);
                result.record(&plan, kind, status, t0, None, Instant::now());
            }
        }
    }
    result
}

/// The status and whole length (head and body) of the answer at the start of `buf`, once
/// its head is in; `Err` for an answer without `content-length` or one that does not parse.
fn answer_length(buf: &[u8]) -> Result<Option<(u16, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or(())?;
    Ok(Some((resp.code.unwrap_or(0), head + length)))
}

/// User and system CPU time this process has used, in seconds (`/proc/self/stat`'s utime
/// and stime, counted in the kernel's fixed USER_HZ of 100 a second); 0 where unreadable.
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn percentiles(mut v: Vec<u32>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let mean = v.iter().map(|&x| u64::from(x)).sum::<u64>() as f64 / v.len() as f64;
    json!({
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": v[v.len() - 1],
        "mean": (mean * 10.0).round() / 10.0,
    })
}

fn summary<'a>(samples: impl Iterator<Item = &'a Sample> + Clone, seconds: f64) -> Value {
    let n = samples.clone().count();
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.clone() {
        *status.entry(s.status.to_string()).or_default() += 1;
    }
    json!({
        "requests": n,
        "rps": ((n as f64 / seconds) * 10.0).round() / 10.0,
        "latency_us": percentiles(samples.map(|s| s.latency_us).collect()),
        "status": status,
    })
}

fn report(args: &Args, plan: &Plan, all: &ConnResult, seconds: f64) -> Value {
    let mut out = summary(all.samples.iter(), seconds);
    let o = out.as_object_mut().expect("an object");
    o.insert("label".into(), json!(args.label));
    o.insert("path".into(), json!(plan.uri.path()));
    o.insert("connections".into(), json!(args.connections));
    o.insert("pipeline".into(), json!(args.pipeline));
    o.insert("seconds".into(), json!((seconds * 1000.0).round() / 1000.0));
    o.insert(
        "warmup".into(),
        json!(if args.requests.is_some() {
            0.0
        } else {
            args.warmup
        }),
    );
    o.insert("errors".into(), json!(all.errors));
    o.insert("keys".into(), json!(plan.valid.len()));
    if plan.stream {
        o.insert(
            "ttfb_us".into(),
            percentiles(all.samples.iter().map(|s| s.ttfb_us).collect()),
        );
        o.insert(
            "ttlb_us".into(),
            percentiles(all.samples.iter().map(|s| s.latency_us).collect()),
        );
    }
    if args.invalid_ratio > 0.0 {
        o.insert("invalid_ratio".into(), json!(args.invalid_ratio));
        for (name, kind) in [("valid", Kind::Valid), ("invalid", Kind::Invalid)] {
            o.insert(
                name.into(),
                summary(all.samples.iter().filter(|s| s.kind == kind), seconds),
            );
        }
    }
    out
}

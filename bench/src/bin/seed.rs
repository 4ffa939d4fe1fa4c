//! seed: fills a Keyplane data directory with N API keys for benchmarks.
//!
//! The directory is prepared exactly as `keyplane serve` prepares it (server secret,
//! database, organization, admin project, owner credentials: keyplane-server's bootstrap
//! functions), then a project with the Generative Language API enabled receives `--count`
//! keys made as the control plane makes them: a fresh `AIza…` string, its HMAC for
//! lookup, its AES-256-GCM ciphertext, its last four characters. Keys are inserted in
//! transactions of `--batch` keys while the next batch is generated on another thread.
//!
//! The plaintext key strings go to `--keys-out` (mode 0600, one a line): that file is the
//! benchmark's own copy of secrets it minted, for the load generator.

use anyhow::Context;
use clap::Parser;
use keyplane_core::{
    new_project_number, now, services, ApiKey, ApiTarget, PlainKey, Project, ProjectState,
    Restrictions, ServerSecret, ServiceState,
};
use keyplane_server::bootstrap;
use keyplane_store::{KeyStore, ProjectStore, SqliteStore, StoreError};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Insert N API keys into a Keyplane data directory (for benchmarks)")]
struct Args {
    /// The data directory (created and bootstrapped if needed).
    #[arg(long)]
    data_dir: PathBuf,
    /// How many keys to create.
    #[arg(long)]
    count: u64,
    /// Where to write the key strings (one a line, mode 0600; replaced if present).
    #[arg(long)]
    keys_out: PathBuf,
    /// The project that receives the keys (created with the Generative Language API
    /// enabled if missing).
    #[arg(long, default_value = "bench-keys")]
    project_id: String,
    /// Keys per transaction.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Restrict every key to the Generative Language API (an API-target restriction the
    /// data plane checks on each request). Off: unrestricted keys.
    #[arg(long)]
    restrict: bool,
    /// Base URL written into owner-credentials.json on a first bootstrap.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let started = Instant::now();
    bootstrap::ensure_data_dir(&args.data_dir)?;
    let secret = bootstrap::load_or_create_secret(&args.data_dir)?;
    let store = SqliteStore::open(&args.data_dir.join(bootstrap::DATABASE_FILE))
        .await
        .with_context(|| format!("cannot open the database in {}", args.data_dir.display()))?;
    let boot = bootstrap::bootstrap(&store, &args.data_dir, &args.base_url).await?;
    let project = bench_project(&store, &args.project_id, boot.organization).await?;

    let mut out = BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&args.keys_out)
            .with_context(|| format!("cannot create {}", args.keys_out.display()))?,
    );

    // Generation (HMAC, AES-GCM, randomness) on its own thread, one batch ahead of the
    // inserts.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<ApiKey>, Vec<PlainKey>)>(2);
    let restrict = args.restrict;
    let (count, batch, number) = (args.count, args.batch as u64, project.number);
    let generator = std::thread::spawn(move || {
        let mut made = 0u64;
        while made < count {
            let n = batch.min(count - made);
            let pair = make_batch(&secret, number, made, n, restrict);
            made += n;
            if tx.blocking_send(pair).is_err() {
                break;
            }
        }
    });
    let mut inserted = 0u64;
    let mut next_report = 100_000u64;
    while let Some((keys, plain)) = rx.recv().await {
        store
            .create_keys(&keys)
            .await
            .map_err(|e| anyhow::anyhow!("inserting keys: {e}"))?;
        for p in &plain {
            out.write_all(p.expose().as_bytes())?;
            out.write_all(b"\n")?;
        }
        inserted += keys.len() as u64;
        if inserted >= next_report || inserted == count {
            next_report += 100_000;
            eprintln!(
                "seed: {inserted}/{count} keys ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the key generator panicked"))?;
    out.flush()?;
    out.get_ref().sync_all()?;
    store.close().await;
    anyhow::ensure!(
        inserted == count,
        "only {inserted} of {count} keys were made"
    );
    println!(
        "{}",
        serde_json::json!({
            "keys": inserted,
            "project": format!("projects/{}", project.project_id),
            "project_number": project.number,
            "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

/// The project the keys go into, with generativelanguage.googleapis.com enabled.
async fn bench_project(
    store: &SqliteStore,
    project_id: &str,
    organization: i64,
) -> anyhow::Result<Project> {
    keyplane_core::validate_project_id(project_id)
        .map_err(|e| anyhow::anyhow!("--project-id: {}", e.0))?;
    let t = now();
    let project = match store.project_by_id(project_id).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            let p = Project {
                number: new_project_number(),
                project_id: project_id.to_owned(),
                display_name: "Benchmark keys".into(),
                parent: format!("organizations/{organization}"),
                state: ProjectState::Active,
                labels: Default::default(),
                tier: "free".into(),
                studio_visible: true,
                created_by: "keyplane-bench".into(),
                create_time: t,
                update_time: t,
                delete_time: None,
                etag: keyplane_core::new_hex_id(8),
            };
            store
                .create_project(&p)
                .await
                .map_err(|e| anyhow::anyhow!("creating the project: {e}"))?;
            p
        }
        Err(e) => anyhow::bail!("reading the project: {e}"),
    };
    anyhow::ensure!(
        project.state == ProjectState::Active,
        "project {project_id} is not active"
    );
    store
        .set_service(&ServiceState {
            project_number: project.number,
            service: services::GENERATIVE_LANGUAGE.into(),
            enabled: true,
            update_time: t,
        })
        .await
        .map_err(|e| anyhow::anyhow!("enabling the Generative Language API: {e}"))?;
    Ok(project)
}

fn make_batch(
    secret: &ServerSecret,
    project_number: i64,
    first: u64,
    n: u64,
    restrict: bool,
) -> (Vec<ApiKey>, Vec<PlainKey>) {
    let restrictions = if restrict {
        Restrictions {
            api_targets: vec![ApiTarget {
                service: services::GENERATIVE_LANGUAGE.into(),
                methods: Vec::new(),
            }],
            ..Default::default()
        }
    } else {
        Restrictions::default()
    };
    let t = now();
    let mut keys = Vec::with_capacity(n as usize);
    let mut plain = Vec::with_capacity(n as usize);
    for i in first..first + n {
        let p = PlainKey::generate();
        let uid = uuid::Uuid::new_v4().to_string();
        keys.push(ApiKey {
            project_number,
            key_id: uid.clone(),
            uid,
            display_name: format!("bench key {i}"),
            lookup_hash: secret.lookup_hash(&p).to_vec(),
            ciphertext: secret.encrypt(&p),
            last4: p.last4(),
            restrictions: restrictions.clone(),
            annotations: Default::default(),
            service_account_email: None,
            create_time: t,
            update_time: t,
            delete_time: None,
            etag: keyplane_server::controlplane::new_etag(),
        });
        plain.push(p);
    }
    (keys, plain)
}

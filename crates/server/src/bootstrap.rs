//! First start of a data directory: the server secret, the database, the organization,
//! the `keyplane-admin` project with its owner service account, and owner-credentials.json.
//! Every step is skipped when its result already exists, so a second start writes nothing.

use anyhow::Context;
use keyplane_core::{
    new_project_number, new_unique_id, now, services, Organization, Project, ProjectState,
    ServerSecret, ServiceAccount, ServiceState,
};
use keyplane_store::{Store, StoreError};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::identity::mint_key_file;

pub const SECRET_FILE: &str = "server-secret";
pub const DATABASE_FILE: &str = "keyplane.db";
pub const OWNER_CREDENTIALS_FILE: &str = "owner-credentials.json";
pub const ADMIN_PROJECT_ID: &str = "keyplane-admin";
pub const OWNER_ACCOUNT_ID: &str = "owner";
/// Environment variable that may hold the server secret (64 hex characters) instead of
/// the secret file.
pub const ENV_SECRET: &str = "KEYPLANE_SECRET";

/// Creates the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to a new file with mode 0600; fails if the file exists.
fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Loads the server secret from the environment or the secret file, creating the file
/// (mode 0600) on first start. An existing file is never rewritten.
pub fn load_or_create_secret(dir: &Path) -> anyhow::Result<ServerSecret> {
    if let Ok(hex_secret) = std::env::var(ENV_SECRET) {
        let raw = hex::decode(hex_secret.trim())
            .map_err(|_| anyhow::anyhow!("{ENV_SECRET} must be 64 hexadecimal characters"))?;
        return ServerSecret::from_bytes(&raw)
            .map_err(|_| anyhow::anyhow!("{ENV_SECRET} must be 64 hexadecimal characters"));
    }
    let path = dir.join(SECRET_FILE);
    if !path.exists() {
        let raw = ServerSecret::generate();
        write_private_file(&path, hex::encode(raw).as_bytes())?;
    }
    let meta = fs::metadata(&path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users; run chmod 600 on it",
            path.display()
        );
    }
    let text = fs::read_to_string(&path)?;
    let raw = hex::decode(text.trim()).map_err(|_| {
        anyhow::anyhow!("{} is corrupt (expected 64 hex characters)", path.display())
    })?;
    ServerSecret::from_bytes(&raw)
        .map_err(|_| anyhow::anyhow!("{} is corrupt (expected 64 hex characters)", path.display()))
}

/// What bootstrap leaves behind.
pub struct Bootstrapped {
    pub organization: i64,
    pub owner_credentials: PathBuf,
}

fn store_err(e: StoreError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Creates the organization, the admin project, the owner account and its key file when
/// missing. `base_url` goes into the key file's `token_uri`.
pub async fn bootstrap(
    store: &dyn Store,
    dir: &Path,
    base_url: &str,
) -> anyhow::Result<Bootstrapped> {
    let t = now();
    let org = match store.organization().await.map_err(store_err)? {
        Some(org) => org,
        None => {
            let org = Organization {
                number: new_project_number(),
                display_name: "keyplane".into(),
                create_time: t,
            };
            store.create_organization(&org).await.map_err(store_err)?;
            tracing::info!(organization = org.number, "created the organization");
            org
        }
    };

    let project = match store.project_by_id(ADMIN_PROJECT_ID).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            let p = Project {
                number: new_project_number(),
                project_id: ADMIN_PROJECT_ID.into(),
                display_name: "Keyplane Admin".into(),
                parent: format!("organizations/{}", org.number),
                state: ProjectState::Active,
                labels: Default::default(),
                tier: "free".into(),
                studio_visible: false,
                created_by: "system".into(),
                create_time: t,
                update_time: t,
                delete_time: None,
                etag: keyplane_core::new_hex_id(8),
            };
            store.create_project(&p).await.map_err(store_err)?;
            for service in services::DEFAULT_ENABLED {
                store
                    .set_service(&ServiceState {
                        project_number: p.number,
                        service: (*service).into(),
                        enabled: true,
                        update_time: t,
                    })
                    .await
                    .map_err(store_err)?;
            }
            p
        }
        Err(e) => return Err(store_err(e)),
    };

    let email = keyplane_core::service_account_email(OWNER_ACCOUNT_ID, ADMIN_PROJECT_ID);
    let sa = match store.service_account(&email).await {
        Ok(sa) => sa,
        Err(StoreError::NotFound) => {
            let sa = ServiceAccount {
                email: email.clone(),
                unique_id: new_unique_id(),
                project_number: project.number,
                project_id: project.project_id.clone(),
                display_name: "Keyplane owner".into(),
                description: "Holds roles/owner on the organization; created at first start."
                    .into(),
                disabled: false,
                create_time: t,
                etag: keyplane_core::new_hex_id(8),
            };
            store.create_service_account(&sa).await.map_err(store_err)?;
            sa
        }
        Err(e) => return Err(store_err(e)),
    };

    // The owner account holds roles/owner on the organization. Written with the
    // organization's first policy; an installation made before IAM policies existed gets
    // it when its organization has no policy yet. A policy an administrator has set is
    // never touched.
    let org_resource = format!("organizations/{}", org.number);
    if store
        .iam_policy(&org_resource)
        .await
        .map_err(store_err)?
        .is_none()
    {
        let mut policy = keyplane_core::iam::Policy::empty();
        policy.add_binding("roles/owner", &format!("serviceAccount:{email}"));
        policy.etag = keyplane_core::iam::new_policy_etag();
        match store.put_iam_policy(&org_resource, &policy, None).await {
            // Another process wrote the first policy meanwhile: keep it.
            Ok(()) | Err(StoreError::EtagMismatch) => {}
            Err(e) => return Err(store_err(e)),
        }
        tracing::info!(member = %email, "granted roles/owner on the organization");
    }

    // Organization policies a new organization starts with (Google's secure defaults):
    // written once per installation, so a policy an administrator deletes stays deleted.
    if store
        .get_meta("bootstrap.org_policies")
        .await
        .map_err(store_err)?
        .is_none()
    {
        for policy in crate::controlplane::orgpolicy::bootstrap_policies(org.number) {
            match store.create_org_policy(&policy).await {
                Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        store
            .set_meta("bootstrap.org_policies", "1")
            .await
            .map_err(store_err)?;
    }

    let creds_path = dir.join(OWNER_CREDENTIALS_FILE);
    if !creds_path.exists()
        && store
            .get_meta("bootstrap.owner_key")
            .await
            .map_err(store_err)?
            .is_none()
    {
        let (key, file) = mint_key_file(&sa, base_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the owner key: {}", e.message))?;
        store
            .add_service_account_key(&key)
            .await
            .map_err(store_err)?;
        let mut text = serde_json::to_string_pretty(&file)?;
        text.push('\n');
        write_private_file(&creds_path, text.as_bytes())?;
        store
            .set_meta("bootstrap.owner_key", &key.key_id)
            .await
            .map_err(store_err)?;
        tracing::info!(path = %creds_path.display(), "wrote the owner credentials");
    }
    Ok(Bootstrapped {
        organization: org.number,
        owner_credentials: creds_path,
    })
}

//! The shared application state, built once at start and handed to every handler.

use keyplane_auth::tokens::TokenCache;
use keyplane_auth::Snapshot;
use keyplane_backends::upstream::UpstreamClient;
use keyplane_backends::Backend;
use keyplane_core::ServerSecret;
use keyplane_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::settings::Settings;

/// One model as the data plane exposes it: `models/{id}` answered by `backend_model`.
#[derive(Clone)]
pub struct RoutedModel {
    pub id: String,
    pub backend_model: String,
    pub display_name: String,
    pub description: String,
    pub route: Route,
    pub info: keyplane_backends::ModelInfo,
}

/// Who answers a model: a [`Backend`] fed neutral chat requests, or the Gemini upstream,
/// which gets the caller's (validated) bytes as they are.
#[derive(Clone)]
pub enum Route {
    Local(Arc<dyn Backend>),
    Upstream(Arc<UpstreamClient>),
}

/// Model name -> backend, including aliases.
#[derive(Default, Clone)]
pub struct ModelRouter {
    pub models: BTreeMap<String, RoutedModel>,
}

impl ModelRouter {
    pub fn get(&self, id: &str) -> Option<&RoutedModel> {
        self.models.get(id)
    }
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub secret: ServerSecret,
    pub snapshot: Snapshot,
    /// Service accounts and IAM policies the request path reads, emptied on every write.
    pub directory: keyplane_auth::Directory,
    pub tokens: TokenCache,
    /// Quota windows per (project, model) and each project's tier.
    pub quotas: keyplane_auth::quota::Quotas,
    /// Usage buckets not yet written to the store.
    pub meter: crate::meter::Meter,
    pub models: ModelRouter,
    pub organization: i64,
    /// `http://host:port` as clients reach this server (for key files' token_uri).
    pub base_url: String,
    pub settings: Settings,
}

/// Cheap to clone; what axum hands to handlers.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

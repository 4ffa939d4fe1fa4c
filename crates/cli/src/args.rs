//! The command line, as clap reads it (README "CLI" table).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "keyplane",
    version,
    about = "Keyplane: a self-hosted Gemini API key platform on Google's wire formats",
    arg_required_else_help = true
)]
pub struct Cli {
    /// Service-account key file for control-plane calls [default: GOOGLE_APPLICATION_CREDENTIALS,
    /// else $KEYPLANE_DATA_DIR/owner-credentials.json, else ./keyplane-data/owner-credentials.json]
    #[arg(long, global = true, value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// Server base URL, e.g. http://127.0.0.1:8080 [default: the server named by the
    /// credentials' token_uri]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server
    Serve(ServeArgs),
    /// Resource Manager projects
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Service Usage: turn an API on or off for a project
    #[command(subcommand)]
    Services(ServicesCommand),
    /// API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// IAM: service accounts and their keys, roles
    #[command(subcommand)]
    Iam(crate::cmd::service_accounts::IamCommand),
    /// Organization policies (the constraint on binding API keys to service accounts)
    #[command(subcommand)]
    OrgPolicies(crate::cmd::org_policies::OrgPoliciesCommand),
    /// The organization and its IAM policy
    #[command(subcommand)]
    Organizations(crate::cmd::iam::OrganizationsCommand),
    /// Call the Gemini API with an API key
    Generate(GenerateArgs),
    /// People who sign in (user:EMAIL)
    #[command(subcommand)]
    Users(crate::cmd::users::UsersCommand),
    /// The audit log of control-plane changes
    Audit(crate::cmd::audit::AuditArgs),
    /// A project's data-plane usage per minute, model, method, key and status
    Usage(crate::cmd::quotas::UsageArgs),
}

impl Command {
    pub fn is_serve(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(
        long,
        env = "KEYPLANE_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Data directory (database, server secret, owner-credentials.json)
    #[arg(
        long,
        env = "KEYPLANE_DATA_DIR",
        default_value = "./keyplane-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Configuration file (TOML)
    #[arg(long = "config", env = "KEYPLANE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The local model's GGUF file
    #[arg(long, env = "KEYPLANE_MODEL", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Serve HTTPS: the certificate chain (PEM, leaf first); needs --tls-key
    #[arg(
        long,
        env = "KEYPLANE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert
    #[arg(
        long,
        env = "KEYPLANE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project
    Create {
        /// Project id: 6-30 lowercase letters, digits and hyphens, starting with a letter
        id: String,
        /// Display name [default: the project id]
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
    },
    /// List projects
    List {
        /// Include projects pending deletion
        #[arg(long)]
        show_deleted: bool,
    },
    /// Show one project (by id or number)
    Describe {
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// Find projects: `id:my-proj`, `name:prod*`, `labels.env:dev`, `state:ACTIVE` (AND)
    Search {
        /// The query [default: every project]
        #[arg(default_value = "")]
        query: String,
    },
    /// Change a project's display name or labels
    Update {
        #[arg(value_name = "PROJECT")]
        project: String,
        /// New display name (4-30 letters, digits, spaces, hyphens, quotes, `!`)
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        /// Labels to add or change, KEY=VALUE (repeatable, or comma-separated)
        #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
        update_labels: Vec<String>,
        /// Labels to remove (repeatable, or comma-separated)
        #[arg(long, value_name = "KEY", value_delimiter = ',')]
        remove_labels: Vec<String>,
        /// Remove every label (before --update-labels applies)
        #[arg(long)]
        clear_labels: bool,
    },
    /// Delete a project: it becomes DELETE_REQUESTED and its keys stop working at once
    Delete {
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// Restore a project pending deletion (its keys work again)
    Undelete {
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// A project's tier, quota limits and what it used this minute and today
    Quotas {
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// Change a project's billing tier (free, tier-1, tier-2, tier-3): its quota limits
    SetTier {
        #[arg(value_name = "PROJECT")]
        project: String,
        #[arg(value_name = "TIER")]
        tier: String,
    },
    /// get-iam-policy, add-iam-policy-binding, remove-iam-policy-binding
    #[command(flatten)]
    Iam(crate::cmd::iam::ProjectIamCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Enable a service (e.g. generativelanguage.googleapis.com) in a project
    Enable {
        service: String,
        #[arg(long, value_name = "PROJECT")]
        project: String,
    },
    /// Disable a service in a project
    Disable {
        service: String,
        #[arg(long, value_name = "PROJECT")]
        project: String,
    },
    /// List the services enabled in a project
    List {
        #[arg(long, value_name = "PROJECT")]
        project: String,
        /// List every known service, disabled ones included
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print its key string once
    Create {
        /// Project id or number [default: the Default Gemini Project, made if missing]
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Display name of the key
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        /// Key id (the last part of the key's name) [default: chosen by the server]
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
    },
    /// List keys, masked to their last four characters
    List {
        /// Project id or number [default: every project]
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Include deleted keys
        #[arg(long)]
        show_deleted: bool,
    },
    /// Show a key's metadata
    Describe {
        /// projects/NUMBER/locations/global/keys/ID
        name: String,
    },
    /// Print a key's full key string
    GetKeyString {
        /// projects/NUMBER/locations/global/keys/ID
        name: String,
    },
    /// Delete a key (it stops working at once; undo with `keys undelete`)
    Delete {
        /// projects/NUMBER/locations/global/keys/ID
        name: String,
        /// Only delete if the key's etag is still this one
        #[arg(long)]
        etag: Option<String>,
    },
    /// Restore a deleted key
    Undelete {
        /// projects/NUMBER/locations/global/keys/ID
        name: String,
    },
    /// Change a key's display name or restrictions (what is not named is kept)
    Update(KeysUpdateArgs),
    /// Find the project and key a key string belongs to
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
pub struct KeysUpdateArgs {
    /// projects/NUMBER/locations/global/keys/ID
    pub name: String,
    /// New display name
    #[arg(long, value_name = "NAME")]
    pub display_name: Option<String>,
    /// Allow only calls from these server IPs or CIDR ranges (replaces any client restriction)
    #[arg(long, value_name = "IP", value_delimiter = ',', num_args = 1.., conflicts_with_all = ["allowed_referrers", "clear_restrictions"])]
    pub allowed_ips: Vec<String>,
    /// Allow only calls from these HTTP referrers, e.g. `*.example.com/*` (replaces any client
    /// restriction)
    #[arg(long, value_name = "PATTERN", value_delimiter = ',', num_args = 1.., conflicts_with = "clear_restrictions")]
    pub allowed_referrers: Vec<String>,
    /// Allow only this API, optionally only these methods: SERVICE[:METHOD,...]
    /// (repeatable; replaces the key's API targets)
    #[arg(
        long,
        value_name = "SERVICE[:METHODS]",
        conflicts_with = "clear_restrictions"
    )]
    pub api_target: Vec<String>,
    /// Remove every restriction
    #[arg(long)]
    pub clear_restrictions: bool,
}

#[derive(Args)]
pub struct LookupArgs {
    /// The key string (AIza...)
    pub key_string: String,
}

impl fmt::Debug for LookupArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupArgs")
            .field("key_string", &"<redacted>")
            .finish()
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The prompt
    pub prompt: String,
    /// Model
    #[arg(long, default_value = "gemini-2.5-flash")]
    pub model: String,
    /// API key [default: GOOGLE_API_KEY, else GEMINI_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print the answer as it is generated
    #[arg(long)]
    pub stream: bool,
}

impl fmt::Debug for GenerateArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateArgs")
            .field("prompt", &self.prompt)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("stream", &self.stream)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "keyplane",
            "keys",
            "list",
            "--format",
            "json",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.server.as_deref(), Some("http://h:1"));
        let cli = Cli::try_parse_from([
            "keyplane",
            "generate",
            "hi",
            "--stream",
            "--model",
            "m",
            "--api-key",
            "k",
        ])
        .unwrap();
        match cli.command {
            Command::Generate(g) => {
                assert!(g.stream);
                assert_eq!((g.model.as_str(), g.api_key.as_deref()), ("m", Some("k")));
            }
            other => panic!("{other:?}"),
        }
    }
}

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
    /// Call the Gemini API with an API key
    Generate(GenerateArgs),
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
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The local model's GGUF file
    #[arg(long, env = "KEYPLANE_MODEL", value_name = "PATH")]
    pub model: Option<PathBuf>,
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
    /// Find the project and key a key string belongs to
    Lookup(LookupArgs),
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

//! The Google services Keyplane knows: their names and titles.

/// The Gemini API.
pub const GENERATIVE_LANGUAGE: &str = "generativelanguage.googleapis.com";
/// Vertex AI (express mode and project-scoped endpoints).
pub const AIPLATFORM: &str = "aiplatform.googleapis.com";

/// (service name, title) of every service Keyplane serves or manages.
pub const KNOWN_SERVICES: &[(&str, &str)] = &[
    (GENERATIVE_LANGUAGE, "Generative Language API"),
    (AIPLATFORM, "Vertex AI API"),
    ("apikeys.googleapis.com", "API Keys API"),
    (
        "iam.googleapis.com",
        "Identity and Access Management (IAM) API",
    ),
    (
        "cloudresourcemanager.googleapis.com",
        "Cloud Resource Manager API",
    ),
    ("serviceusage.googleapis.com", "Service Usage API"),
    ("orgpolicy.googleapis.com", "Organization Policy API"),
];

/// The title of a known service, or `None` for a service Keyplane does not know.
pub fn service_title(name: &str) -> Option<&'static str> {
    KNOWN_SERVICES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// Services a new project has enabled from the start (as Google Cloud does for the
/// services every project needs to be managed at all).
pub const DEFAULT_ENABLED: &[&str] = &[
    "apikeys.googleapis.com",
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "serviceusage.googleapis.com",
];

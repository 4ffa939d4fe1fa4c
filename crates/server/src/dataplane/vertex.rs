//! Vertex AI express mode: `POST /{v}/publishers/google/models/{model}:generateContent`,
//! `:streamGenerateContent` and `:countTokens`, with an API key (`x-goog-api-key` or
//! `?key=`), as google-genai sends it with `vertexai=True, api_key=…` (gemini-api.md §12).
//!
//! The called service is aiplatform.googleapis.com: it must be enabled in the key's
//! project (else SERVICE_DISABLED naming it) and pass the key's API targets. Models are
//! routed as on the Gemini path and answered with the same GenerateContentResponse JSON;
//! a model routed to the Gemini upstream is forwarded to its Gemini path
//! (`/{v}/models/{model}:verb`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use keyplane_wire::gemini::GenerateContentRequest;
use keyplane_wire::{parse_json_body, ApiError};
use serde_json::{json, Value};

use super::access::{authorize, authorize_in_project, DataCaller, DataRequest, Target};
use super::{generate, path_or_404, split_model};
use crate::app::{AppState, Route};
use crate::meter::{metered, Ticket};

/// Google's own publisher; the only one served.
const GOOGLE: &str = "google";

/// Vertex's 404 for a publisher model it does not serve.
fn publisher_model_not_found(project_number: i64, publisher: &str, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Publisher Model `projects/{project_number}/locations/global/publishers/{publisher}/models/{id}` \
         was not found or your project does not have access to it. Please ensure you are using a \
         valid model version. For more information, see: \
         https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
    ))
}

/// `GET /{v}/publishers/google/models/{model}`: a minimal `PublisherModel`.
pub async fn get_model(
    State(state): State<AppState>,
    req: DataRequest,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (publisher, rest) = path_or_404(path, &req.path)?;
    let target = Target {
        service: keyplane_core::services::AIPLATFORM,
        method: format!(
            "google.cloud.aiplatform.{}.ModelGardenService.GetPublisherModel",
            req.version
        )
        .into(),
    };
    let caller = authorize(&state, &req, &target).await?;
    let (id, method) = split_model(&rest);
    if let Some(method) = method {
        return Err(ApiError::not_found(format!(
            "Method '{method}' is not supported with GET; use POST {}.",
            req.path
        )));
    }
    if publisher != GOOGLE || state.models.get(&id).is_none() {
        return Err(publisher_model_not_found(
            caller.project_number,
            &publisher,
            &id,
        ));
    }
    Ok(Json(json!({
        "name": format!("publishers/{publisher}/models/{id}"),
        "versionId": "001",
        "openSourceCategory": "PROPRIETARY",
        "launchStage": "GA",
    })))
}

pub async fn post_model(
    State(state): State<AppState>,
    req: DataRequest,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (publisher, rest) = match path_or_404(path, &req.path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut ticket = None;
    let result = post_model_inner(
        &state,
        &req,
        &publisher,
        &rest,
        uri.query(),
        body,
        &mut ticket,
    )
    .await;
    metered(result, ticket)
}

/// `POST /{v}/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:verb`: the
/// project-scoped Vertex path, for OAuth callers (see [`authorize_in_project`]).
pub async fn post_project_model(
    State(state): State<AppState>,
    req: DataRequest,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (project, _location, publisher, rest) = match path {
        Ok(Path(p)) => p,
        Err(_) => {
            return ApiError::not_found(format!(
                "The requested URL {} was not found on this server.",
                req.path
            ))
            .into_response()
        }
    };
    let (_, method) = split_model(&rest);
    let target = Target::vertex(req.version, method.as_deref().unwrap_or("predict"));
    let caller = match authorize_in_project(&state, &req, &target, &project).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut ticket = None;
    let call = Call {
        state: &state,
        req: &req,
        caller: &caller,
        publisher: &publisher,
        rest: &rest,
        query: uri.query(),
    };
    let result = serve(call, body, &mut ticket).await;
    metered(result, ticket)
}

async fn post_model_inner(
    state: &AppState,
    req: &DataRequest,
    publisher: &str,
    rest: &str,
    query: Option<&str>,
    body: Bytes,
    ticket: &mut Option<Ticket>,
) -> Result<Response, ApiError> {
    let (_, method) = split_model(rest);
    let verb = method.as_deref().unwrap_or("predict");
    let target = Target::vertex(req.version, verb);
    let caller = authorize(state, req, &target).await?;
    let call = Call {
        state,
        req,
        caller: &caller,
        publisher,
        rest,
        query,
    };
    serve(call, body, ticket).await
}

/// An authorized Vertex call.
struct Call<'a> {
    state: &'a AppState,
    req: &'a DataRequest,
    caller: &'a DataCaller,
    publisher: &'a str,
    rest: &'a str,
    query: Option<&'a str>,
}

/// Answers an authorized Vertex call.
async fn serve(
    call: Call<'_>,
    body: Bytes,
    ticket: &mut Option<Ticket>,
) -> Result<Response, ApiError> {
    let Call {
        state,
        req,
        caller,
        publisher,
        rest,
        query,
    } = call;
    let project_number = caller.project_number;
    let (id, method) = split_model(rest);
    let Some(method) = method else {
        return Err(ApiError::not_found(format!(
            "The requested URL {} was not found on this server (POST needs a method, e.g. :generateContent).",
            req.path
        )));
    };
    match method.as_str() {
        "generateContent" | "streamGenerateContent" | "countTokens" => {}
        "embedContent" | "predict" | "rawPredict" | "streamRawPredict" | "computeTokens" => {
            return Err(publisher_model_not_found(project_number, publisher, &id))
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "The requested URL {} was not found on this server.",
                req.path
            )))
        }
    }
    let m = match state.models.get(&id) {
        Some(m) if publisher == GOOGLE => m,
        _ => return Err(publisher_model_not_found(project_number, publisher, &id)),
    };
    super::admit(
        state,
        ticket.insert(super::open_ticket(state, caller, &id, &method)),
    )?;
    // Vertex's countTokens takes the generateContent fields at the top level.
    let gen: GenerateContentRequest = parse_json_body(&body)?;
    let backend = match &m.route {
        Route::Local(backend) => backend.as_ref(),
        Route::Upstream(up) => {
            let body = if method == "countTokens" {
                generate::validate_count(&gen)?;
                gemini_count_body(&m.backend_model, body)?
            } else {
                gen.validate()?;
                body
            };
            let call = generate::Forward {
                version: req.version,
                model: &m.backend_model,
                verb: &method,
                query,
                content_type: req.headers.get(header::CONTENT_TYPE),
                body,
            };
            return generate::forward(up, call).await;
        }
    };
    match method.as_str() {
        "generateContent" => generate::generate_content(m, backend, &gen).await,
        "streamGenerateContent" => {
            generate::stream_generate_content(m, backend, &gen, &req.params).await
        }
        _ => generate::count_tokens(m, backend, &gen).await,
    }
}

/// A Vertex countTokens body as the Gemini API takes it: unchanged when it holds only
/// `contents`, else its fields wrapped in `generateContentRequest` (Gemini's countTokens
/// has no top-level systemInstruction, tools or generationConfig).
fn gemini_count_body(model: &str, body: Bytes) -> Result<Bytes, ApiError> {
    let mut fields: serde_json::Map<String, Value> = parse_json_body(&body)?;
    if fields.keys().all(|k| k == "contents") {
        return Ok(body);
    }
    fields.remove("model");
    fields.insert("model".to_owned(), Value::String(format!("models/{model}")));
    let wrapped = json!({ "generateContentRequest": fields });
    serde_json::to_vec(&wrapped)
        .map(Bytes::from)
        .map_err(ApiError::internal_from)
}

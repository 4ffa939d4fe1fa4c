//! The Gemini API URL family: `GET /{v}/models`, `GET /{v}/models/{id}`,
//! `POST /{v}/models/{id}:{verb}` (generateContent, streamGenerateContent, countTokens).
//! A model routed to the Gemini upstream gets the same checks and body validation, then
//! the caller's bytes ([`generate::forward`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use keyplane_wire::gemini::{
    CountTokensRequest, GenerateContentRequest, ListModelsResponse, Model,
};
use keyplane_wire::{parse_json_body, ApiError};

use super::access::{authorize, DataRequest, Target};
use super::{generate, path_or_404, split_model};
use crate::app::{AppState, Route, RoutedModel};
use crate::meter::{metered, Ticket};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

pub fn model_json(id: &str, m: &RoutedModel) -> Model {
    let description = if id == m.backend_model {
        m.description.clone()
    } else {
        format!(
            "Alias of models/{} (served by Keyplane). {}",
            m.backend_model, m.description
        )
    };
    Model {
        name: format!("models/{id}"),
        base_model_id: Some(id.to_owned()),
        version: "001".to_owned(),
        display_name: if id == m.backend_model {
            m.display_name.clone()
        } else {
            format!("{} (as {id})", m.display_name)
        },
        description,
        input_token_limit: i32::try_from(m.info.input_token_limit).unwrap_or(i32::MAX),
        output_token_limit: i32::try_from(m.info.output_token_limit).unwrap_or(i32::MAX),
        supported_generation_methods: vec!["generateContent".to_owned(), "countTokens".to_owned()],
        temperature: Some(f64::from(m.info.temperature)),
        max_temperature: Some(f64::from(m.info.max_temperature)),
        top_p: Some(f64::from(m.info.top_p)),
        top_k: Some(i32::try_from(m.info.top_k).unwrap_or(i32::MAX)),
        thinking: false,
    }
}

pub async fn list_models(
    State(state): State<AppState>,
    req: DataRequest,
) -> Result<Json<ListModelsResponse>, ApiError> {
    let target = Target::gemini(req.version, "ModelService", "ListModels");
    authorize(&state, &req, &target).await?;
    let params = &req.params;
    let size = match params.get("pageSize").or_else(|| params.get("page_size")) {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => (n as usize).min(MAX_PAGE_SIZE),
            Ok(0) => DEFAULT_PAGE_SIZE,
            _ => {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid value \"{s}\" for page_size: it must be a non-negative integer."
                )))
            }
        },
    };
    let start = match params.get("pageToken").or_else(|| params.get("page_token")) {
        None => 0,
        Some(t) => t
            .strip_prefix("m")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= state.models.models.len())
            .ok_or_else(|| ApiError::invalid_argument("Invalid page token."))?,
    };
    let all: Vec<Model> = state
        .models
        .models
        .iter()
        .map(|(id, m)| model_json(id, m))
        .collect();
    let end = (start + size).min(all.len());
    Ok(Json(ListModelsResponse {
        models: all[start..end].to_vec(),
        next_page_token: (end < all.len()).then(|| format!("m{end}")),
    }))
}

pub async fn get_model(
    State(state): State<AppState>,
    req: DataRequest,
    rest: Result<Path<String>, PathRejection>,
) -> Result<Json<Model>, ApiError> {
    let rest = path_or_404(rest, &req.path)?;
    let version = req.version;
    let target = Target::gemini(version, "ModelService", "GetModel");
    authorize(&state, &req, &target).await?;
    let (id, method) = split_model(&rest);
    if let Some(method) = method {
        return Err(ApiError::not_found(format!(
            "Method '{method}' is not supported with GET; use POST /{version}/models/{id}:{method}."
        )));
    }
    let m = state
        .models
        .get(&id)
        .ok_or_else(|| ApiError::model_not_found(&id, version, "getModel"))?;
    Ok(Json(model_json(&id, m)))
}

pub async fn post_model(
    State(state): State<AppState>,
    req: DataRequest,
    rest: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = match path_or_404(rest, &req.path) {
        Ok(rest) => rest,
        Err(e) => return e.into_response(),
    };
    post_model_decoded(&state, &req, &rest, uri.query(), body).await
}

/// `POST /{v}/models/{rest}` once the path's `rest` is decoded and the body read: from the
/// router ([`post_model`]) and from the connection's own service (`crate::front`).
pub(crate) async fn post_model_decoded(
    state: &AppState,
    req: &DataRequest,
    rest: &str,
    query: Option<&str>,
    body: Bytes,
) -> Response {
    let mut ticket = None;
    let result = post_model_inner(state, req, rest, query, body, &mut ticket).await;
    metered(result, ticket)
}

async fn post_model_inner(
    state: &AppState,
    req: &DataRequest,
    rest: &str,
    query: Option<&str>,
    body: Bytes,
    ticket: &mut Option<Ticket>,
) -> Result<Response, ApiError> {
    let version = req.version;
    let (id, method) = split_model(rest);
    let target = match &method {
        Some(verb) => Target::gemini_verb(version, verb),
        None => Target::gemini(version, "ModelService", "GetModel"),
    };
    let caller = authorize(state, req, &target).await?;
    let Some(method) = method else {
        return Err(ApiError::not_found(format!(
            "The requested URL /{version}/models/{rest} was not found on this server (POST needs a method, e.g. :generateContent)."
        )));
    };
    let m = match method.as_str() {
        "generateContent" | "streamGenerateContent" | "countTokens" => state
            .models
            .get(&id)
            .ok_or_else(|| ApiError::model_not_found(&id, version, &method))?,
        "embedContent"
        | "batchEmbedContents"
        | "batchGenerateContent"
        | "predict"
        | "predictLongRunning"
        | "generateAnswer" => return Err(ApiError::model_not_found(&id, version, &method)),
        _ => {
            return Err(ApiError::not_found(format!(
                "The requested URL /{version}/models/{rest} was not found on this server."
            )))
        }
    };
    let t = ticket.insert(super::open_ticket(state, &caller, &id, &method));
    // An ephemeral token: its constraints first, then the quota, then one use spent
    // (atomically): a call refused for quota spends no use.
    let body = match &caller.ephemeral {
        Some(token) => {
            let constrained = token.constrain(&id, &target.method, &body)?;
            super::admit(state, t)?;
            token.spend(state, &target.method).await?;
            Bytes::from(constrained)
        }
        None => {
            super::admit(state, t)?;
            body
        }
    };
    let backend = match &m.route {
        Route::Local(backend) => backend.as_ref(),
        Route::Upstream(up) => {
            // Parsed and validated as for the local model, then sent as it came.
            match method.as_str() {
                "countTokens" => {
                    let count: CountTokensRequest = parse_json_body(&body)?;
                    count.validate()?;
                    generate::validate_count(&count.into_generate_request())?;
                }
                _ => parse_json_body::<GenerateContentRequest>(&body)?.validate()?,
            }
            let call = generate::Forward {
                version,
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
        "generateContent" => {
            let gen: GenerateContentRequest = parse_json_body(&body)?;
            generate::generate_content(m, backend, &gen).await
        }
        "streamGenerateContent" => {
            let gen: GenerateContentRequest = parse_json_body(&body)?;
            generate::stream_generate_content(m, backend, &gen, &req.params).await
        }
        _ => {
            let count: CountTokensRequest = parse_json_body(&body)?;
            count.validate()?;
            generate::count_tokens(m, backend, &count.into_generate_request()).await
        }
    }
}

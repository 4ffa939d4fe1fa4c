//! The Gemini API client (`/v1beta/models…`), authenticated with an API key sent in
//! `x-goog-api-key` as the SDKs send it. Streaming uses `:streamGenerateContent?alt=sse`
//! and yields one `GenerateContentResponse` per event; an `{"error": …}` event ends the
//! stream with that error.

use crate::control::http_client;
use crate::error::{ClientError, Secret};
use crate::http::{read_json, trim_base};
use crate::sse::SseDecoder;
use futures::stream::{self, BoxStream, StreamExt};
use keyplane_wire::gemini::{
    CountTokensRequest, CountTokensResponse, GenerateContentRequest, GenerateContentResponse,
    ListModelsResponse, Model,
};
use std::collections::VecDeque;
use std::fmt;

/// The API version the client calls (what google-genai uses by default).
pub const DEFAULT_API_VERSION: &str = "v1beta";
/// The header that carries the key.
pub const API_KEY_HEADER: &str = "x-goog-api-key";
const MAX_PAGES: usize = 1000;

/// The chunks of a streamed answer, as they arrive.
pub type ChunkStream = BoxStream<'static, Result<GenerateContentResponse, ClientError>>;

/// A Gemini API client for one server and one key.
#[derive(Clone)]
pub struct Gemini {
    base: String,
    version: String,
    api_key: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for Gemini {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gemini")
            .field("base", &self.base)
            .field("version", &self.version)
            .field("api_key", &self.api_key)
            .finish()
    }
}

impl Gemini {
    /// A client for the server at `base_url` (`http://host:port`) using `api_key`.
    pub fn new(base_url: &str, api_key: impl Into<Secret>) -> Self {
        Gemini {
            base: trim_base(base_url),
            version: DEFAULT_API_VERSION.to_owned(),
            api_key: api_key.into(),
            http: http_client(),
        }
    }

    /// Calls another API version (`v1`, `v1alpha`, …) instead of `v1beta`.
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One page of `GET /{v}/models`.
    pub async fn list_models_page(
        &self,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListModelsResponse, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(n) = page_size {
            query.push(("pageSize", n.to_string()));
        }
        if let Some(t) = page_token {
            query.push(("pageToken", t.to_owned()));
        }
        let mut req = self.http.get(self.url("/models"));
        if !query.is_empty() {
            req = req.query(&query);
        }
        let resp = req
            .header(API_KEY_HEADER, self.api_key.expose())
            .send()
            .await?;
        read_json(resp, "GET models").await
    }

    /// Every model, following `nextPageToken`.
    pub async fn list_models(&self) -> Result<Vec<Model>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.list_models_page(None, token.as_deref()).await?;
            all.extend(page.models);
            match page
                .next_page_token
                .filter(|t| !t.is_empty() && Some(t) != token.as_ref())
            {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET /{v}/models/{model}`.
    pub async fn get_model(&self, model: &str) -> Result<Model, ClientError> {
        let id = model_id(model)?;
        let resp = self
            .http
            .get(self.url(&format!("/models/{id}")))
            .header(API_KEY_HEADER, self.api_key.expose())
            .send()
            .await?;
        read_json(resp, "GET models/{model}").await
    }

    /// `POST /{v}/models/{model}:generateContent`.
    pub async fn generate_content(
        &self,
        model: &str,
        request: &GenerateContentRequest,
    ) -> Result<GenerateContentResponse, ClientError> {
        let id = model_id(model)?;
        let resp = self
            .http
            .post(self.url(&format!("/models/{id}:generateContent")))
            .header(API_KEY_HEADER, self.api_key.expose())
            .json(request)
            .send()
            .await?;
        read_json(resp, "POST models/{model}:generateContent").await
    }

    /// `POST /{v}/models/{model}:countTokens`.
    pub async fn count_tokens(
        &self,
        model: &str,
        request: &CountTokensRequest,
    ) -> Result<CountTokensResponse, ClientError> {
        let id = model_id(model)?;
        let resp = self
            .http
            .post(self.url(&format!("/models/{id}:countTokens")))
            .header(API_KEY_HEADER, self.api_key.expose())
            .json(request)
            .send()
            .await?;
        read_json(resp, "POST models/{model}:countTokens").await
    }

    /// `POST /{v}/models/{model}:streamGenerateContent?alt=sse`. Errors found before the
    /// stream starts (bad key, unknown model) are returned here; later ones are items.
    pub async fn stream_generate_content(
        &self,
        model: &str,
        request: &GenerateContentRequest,
    ) -> Result<ChunkStream, ClientError> {
        let id = model_id(model)?;
        let resp = self
            .http
            .post(self.url(&format!("/models/{id}:streamGenerateContent")))
            .query(&[("alt", "sse")])
            .header(API_KEY_HEADER, self.api_key.expose())
            .json(request)
            .send()
            .await?;
        let code = resp.status().as_u16();
        if code != 200 {
            let body = resp.bytes().await?;
            return Err(ClientError::from_error_body(code, &body));
        }
        Ok(sse_chunks(resp.bytes_stream()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}{}", self.base, self.version, path)
    }
}

/// A plain one-turn text request.
pub fn text_request(prompt: &str) -> GenerateContentRequest {
    GenerateContentRequest {
        contents: vec![keyplane_wire::gemini::Content::user_text(prompt)],
        ..GenerateContentRequest::default()
    }
}

/// `gemini-2.5-flash` or `models/gemini-2.5-flash` → `gemini-2.5-flash`, percent-encoded.
fn model_id(model: &str) -> Result<String, ClientError> {
    let id = model.strip_prefix("models/").unwrap_or(model);
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(ClientError::InvalidArgument(format!(
            "{model:?} is not a model name (expected e.g. gemini-2.5-flash or models/gemini-2.5-flash)"
        )));
    }
    Ok(urlencoding::encode(id).into_owned())
}

/// Turns an SSE byte stream into parsed chunks.
pub(crate) fn sse_chunks<S, B, E>(body: S) -> ChunkStream
where
    S: futures::Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send,
    E: Into<ClientError> + Send,
{
    struct State<S> {
        body: S,
        decoder: SseDecoder,
        pending: VecDeque<String>,
        ended: bool,
        failed: bool,
    }
    let state = State {
        body: Box::pin(body),
        decoder: SseDecoder::new(),
        pending: VecDeque::new(),
        ended: false,
        failed: false,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if st.failed {
                return None;
            }
            if let Some(data) = st.pending.pop_front() {
                let item = parse_event(&data);
                st.failed = item.is_err();
                return Some((item, st));
            }
            if st.ended {
                return None;
            }
            match st.body.next().await {
                Some(Ok(bytes)) => st.pending.extend(st.decoder.feed(bytes.as_ref())),
                Some(Err(e)) => {
                    st.failed = true;
                    return Some((Err(e.into()), st));
                }
                None => {
                    st.ended = true;
                    st.pending.extend(st.decoder.finish());
                }
            }
        }
    })
    .boxed()
}

/// One event's data: a chunk, or `{"error": status}`.
fn parse_event(data: &str) -> Result<GenerateContentResponse, ClientError> {
    let value: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| ClientError::decode("a streamGenerateContent event", &e))?;
    if let Some(err) = value.get("error") {
        return Err(ClientError::from_status_value(500, err));
    }
    serde_json::from_value(value)
        .map_err(|e| ClientError::decode("a streamGenerateContent event", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pieces: Vec<&'static [u8]>) -> Vec<Result<GenerateContentResponse, ClientError>> {
        let body = stream::iter(
            pieces
                .into_iter()
                .map(Ok::<_, ClientError>)
                .collect::<Vec<_>>(),
        );
        futures::executor::block_on(sse_chunks(body).collect::<Vec<_>>())
    }

    fn chunk(text: &str) -> String {
        format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\"}}], \"role\": \"model\"}}, \"index\": 0}}]}}\r\n\r\n"
        )
    }

    #[test]
    fn chunks_arrive_in_order_across_split_reads() {
        let whole = format!("{}{}", chunk("Hel"), chunk("lo"));
        let leaked: &'static str = Box::leak(whole.into_boxed_str());
        let (a, b) = leaked.as_bytes().split_at(37);
        let out = collect(vec![a, b]);
        let texts: Vec<String> = out.into_iter().map(|r| r.unwrap().text()).collect();
        assert_eq!(texts, vec!["Hel", "lo"]);
    }

    #[test]
    fn an_error_event_ends_the_stream() {
        let first: &'static str = Box::leak(chunk("a").into_boxed_str());
        let out = collect(vec![
            first.as_bytes(),
            b"data: {\"error\": {\"code\": 429, \"message\": \"slow down\", \"status\": \"RESOURCE_EXHAUSTED\"}}\n\n",
            b"data: {\"candidates\": []}\n\n",
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().text(), "a");
        let err = out[1].as_ref().unwrap_err();
        assert_eq!(err.status(), Some("RESOURCE_EXHAUSTED"));
        assert!(matches!(err, ClientError::Api { code: 429, .. }));
    }

    #[test]
    fn undecodable_events_are_errors_without_quoting() {
        let out = collect(vec![b"data: {\"candidates\": \"AIzaSECRET\"}\n\n"]);
        assert_eq!(out.len(), 1);
        let err = out[0].as_ref().unwrap_err().to_string();
        assert!(!err.contains("AIzaSECRET"), "{err}");
    }

    #[test]
    fn model_names() {
        assert_eq!(model_id("gemini-2.5-flash").unwrap(), "gemini-2.5-flash");
        assert_eq!(
            model_id("models/gemini-2.5-flash").unwrap(),
            "gemini-2.5-flash"
        );
        assert!(model_id("").is_err());
        assert!(model_id("models/").is_err());
        assert!(model_id("a/b").is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let g = Gemini::new("http://h:1/", "AIzaSECRETKEY");
        let shown = format!("{g:?}");
        assert!(!shown.contains("AIzaSECRETKEY"), "{shown}");
        assert_eq!(g.base_url(), "http://h:1");
    }
}

//! Request bodies into typed values, with Google's 400 for anything malformed.

use crate::case::to_snake;
use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};

/// The proto path of a serde error location: `contents[0].parts[1].inline_data`.
fn proto_path(path: &Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&to_snake(key));
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// (proto path of the parent, field name as sent) of a field no struct declares.
/// Google rejects such fields: "Unknown name \"foo\" at 'generation_config'".
enum Seg {
    Index(usize),
    Key(String),
}

fn unknown_field(path: &serde_ignored::Path<'_>) -> (String, String) {
    fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        use serde_ignored::Path as P;
        match path {
            P::Root => {}
            P::Seq { parent, index } => {
                segments(parent, out);
                out.push(Seg::Index(*index));
            }
            P::Map { parent, key } => {
                segments(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                segments(parent, out)
            }
        }
    }
    let mut segs = Vec::new();
    segments(path, &mut segs);
    let name = match segs.pop() {
        Some(Seg::Key(key)) => key,
        Some(Seg::Index(index)) => index.to_string(),
        None => String::new(),
    };
    let mut parent = String::new();
    for seg in segs {
        match seg {
            Seg::Index(index) => parent.push_str(&format!("[{index}]")),
            Seg::Key(key) => {
                if !parent.is_empty() {
                    parent.push('.');
                }
                parent.push_str(&to_snake(&key));
            }
        }
    }
    (parent, name)
}

/// serde_json's message without its " at line L column C" suffix.
fn bare_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Parses a JSON request body. An empty body, malformed JSON or a value of the wrong type
/// gives 400 INVALID_ARGUMENT "Invalid JSON payload received. …" with a `BadRequest`
/// detail naming the snake_case field path when known.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "Unexpected end of string. Expected an object key or }.",
        ));
    }
    // A request message is a JSON object; serde would also read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_json(
            "Unknown name \"\": Root element must be a message.",
        ));
    }
    // The common case, a well-formed body with known fields only, without the field-path
    // tracking: only a body that fails here is parsed again, tracked, for Google's message.
    if let Some(value) = parse_known_fields(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let mut unknown: Vec<(String, String)> = Vec::new();
    let parsed: Result<T, serde_json::Error> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        |path| unknown.push(unknown_field(&path)),
    );
    let value: T = parsed.map_err(|inner| {
        let field = proto_path(&track.path());
        let msg = bare_message(&inner);
        if inner.is_data() && !field.is_empty() {
            ApiError::bad_request_fields(vec![(
                field.clone(),
                format!("Invalid JSON payload received. Invalid value at '{field}': {msg}."),
            )])
        } else if inner.is_data() {
            ApiError::invalid_json(format!("{msg}."))
        } else {
            ApiError::invalid_json(format!(
                "{msg} (line {}, column {}).",
                inner.line(),
                inner.column()
            ))
        }
    })?;
    if !unknown.is_empty() {
        return Err(ApiError::bad_request_fields(
            unknown
                .into_iter()
                .map(|(parent, name)| {
                    let at = if parent.is_empty() {
                        String::new()
                    } else {
                        format!(" at '{parent}'")
                    };
                    let line = format!(
                        "Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field."
                    );
                    (parent, line)
                })
                .collect(),
        ));
    }
    de.end().map_err(|e| {
        ApiError::invalid_json(format!(
            "{} (line {}, column {}).",
            bare_message(&e),
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}

/// The body as `T` when it is well-formed JSON of the right shape, with no field `T` does
/// not declare and nothing after the value; `None` otherwise (the caller then reports why).
fn parse_known_fields<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut unknown = false;
    let value: T = serde_ignored::deserialize(&mut de, |_| unknown = true).ok()?;
    if unknown || de.end().is_err() {
        return None;
    }
    Some(value)
}

/// Like [`parse_json_body`], but an empty body reads as `T::default()` (for methods whose
/// body is optional, e.g. `:undelete` sent as `{}` or nothing).
pub fn parse_json_body_or_default<T: DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json_body(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        #[serde(default)]
        max_tokens: Option<i32>,
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        #[serde(default)]
        generation_config: Option<Inner>,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[test]
    fn well_formed_bodies_parse() {
        let v: Outer =
            parse_json_body(br#"{"generationConfig":{"maxTokens":3},"items":[{}]} "#).unwrap();
        assert_eq!(
            v.generation_config,
            Some(Inner {
                max_tokens: Some(3)
            })
        );
        assert_eq!(v.items.len(), 1);
    }

    /// Bodies the untracked parse refuses still get the tracked parse's messages.
    #[test]
    fn bad_bodies_keep_google_messages() {
        let e = parse_json_body::<Outer>(br#"{"generationConfig":{"maxTokenz":3}}"#).unwrap_err();
        assert_eq!(e.code, 400);
        let text = serde_json::to_string(&e.to_status_json()).unwrap();
        assert!(
            text.contains(
                r#"Unknown name \"maxTokenz\" at 'generation_config': Cannot find field."#
            ),
            "{text}"
        );
        let e = parse_json_body::<Outer>(br#"{"items":[{"maxTokens":"x"}]}"#).unwrap_err();
        let text = serde_json::to_string(&e.to_status_json()).unwrap();
        assert!(
            text.contains("Invalid value at 'items[0].max_tokens'"),
            "{text}"
        );
        let e = parse_json_body::<Outer>(br#"{} {}"#).unwrap_err();
        assert!(
            e.message.starts_with("Invalid JSON payload received."),
            "{}",
            e.message
        );
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = parse_json_body::<Outer>(b"  ").unwrap_err();
        assert!(
            e.message.contains("Unexpected end of string"),
            "{}",
            e.message
        );
    }
}

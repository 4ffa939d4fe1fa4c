//! Lenient readers for proto3 JSON input: nulls as defaults, integers written as floats
//! or strings, enums as names or numbers, snake_case keys inside typed sub-messages.

use crate::case::to_camel;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// `null` (or absence, with `#[serde(default)]`) reads as the type's default.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn float_to_int(f: f64) -> Result<i64, String> {
    if f.is_finite()
        && f.fract() == 0.0
        && (-9.223_372_036_854_775e18..=9.223_372_036_854_775e18).contains(&f)
    {
        Ok(f as i64)
    } else {
        Err(format!("invalid integer value {f}"))
    }
}

/// An integer from `5`, `5.0`, `"5"` or `"5.0"`.
pub(crate) fn int_from_value(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(u) = n.as_u64() {
                Err(format!("integer {u} is out of range"))
            } else {
                float_to_int(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(i)
            } else if let Ok(f) = t.parse::<f64>() {
                float_to_int(f)
            } else {
                Err(format!("invalid integer value \"{s}\""))
            }
        }
        other => Err(format!("expected an integer, found {}", kind(other))),
    }
}

fn float_from_value(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("invalid number {n}")),
        Value::String(s) => match s.trim() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t
                .parse::<f64>()
                .map_err(|_| format!("invalid number \"{s}\"")),
        },
        other => Err(format!("expected a number, found {}", kind(other))),
    }
}

pub(crate) fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let i = int_from_value(&v).map_err(D::Error::custom)?;
            i32::try_from(i)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("integer {i} is out of range for int32")))
        }
    }
}

pub(crate) fn i32_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    Ok(opt_i32(d)?.unwrap_or_default())
}

pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => int_from_value(&v).map(Some).map_err(D::Error::custom),
    }
}

pub(crate) fn i64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(opt_i64(d)?.unwrap_or_default())
}

pub(crate) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => float_from_value(&v).map(Some).map_err(D::Error::custom),
    }
}

pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(D::Error::custom(format!(
            "expected a boolean, found {}",
            kind(&other)
        ))),
    }
}

pub(crate) fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(opt_bool(d)?.unwrap_or_default())
}

/// An enum value given as its name or its number (looked up in `names`).
pub(crate) fn enum_from_value(v: Value, names: &[&str]) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(_) => {
            let i = int_from_value(&v)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| names.get(i))
                .map(|s| Some((*s).to_owned()))
                .ok_or_else(|| format!("invalid enum value {i}"))
        }
        other => Err(format!("expected an enum name, found {}", kind(&other))),
    }
}

/// Declares a module of readers for one proto enum: `opt`, `req` and `vec`.
macro_rules! proto_enum {
    ($(#[$m:meta])* $name:ident, [$($v:literal),* $(,)?]) => {
        $(#[$m])*
        #[allow(dead_code)]
        pub(crate) mod $name {
            use serde::de::Error as _;
            use serde::{Deserialize, Deserializer};
            use serde_json::Value;

            /// Names, indexed by enum number.
            pub(crate) const NAMES: &[&str] = &[$($v),*];

            pub(crate) fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
                match Option::<Value>::deserialize(d)? {
                    None => Ok(None),
                    Some(v) => super::enum_from_value(v, NAMES).map_err(D::Error::custom),
                }
            }

            pub(crate) fn req<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
                Ok(opt(d)?.unwrap_or_default())
            }

            pub(crate) fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
                let items = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    if let Some(s) = super::enum_from_value(v, NAMES).map_err(D::Error::custom)? {
                        out.push(s);
                    }
                }
                Ok(out)
            }
        }
    };
}

proto_enum!(
    harm_category,
    [
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_DEROGATORY",
        "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE",
        "HARM_CATEGORY_SEXUAL",
        "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
    ]
);
proto_enum!(
    harm_block_threshold,
    [
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ]
);
proto_enum!(
    harm_block_method,
    ["HARM_BLOCK_METHOD_UNSPECIFIED", "SEVERITY", "PROBABILITY"]
);
proto_enum!(
    harm_probability,
    [
        "HARM_PROBABILITY_UNSPECIFIED",
        "NEGLIGIBLE",
        "LOW",
        "MEDIUM",
        "HIGH"
    ]
);
proto_enum!(
    function_calling_mode,
    ["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"]
);
proto_enum!(
    function_behavior,
    ["UNSPECIFIED", "BLOCKING", "NON_BLOCKING"]
);
proto_enum!(
    task_type,
    [
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    ]
);
proto_enum!(modality, ["MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"]);
proto_enum!(
    media_resolution,
    [
        "MEDIA_RESOLUTION_UNSPECIFIED",
        "MEDIA_RESOLUTION_LOW",
        "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH",
    ]
);
proto_enum!(
    /// Numbers unverified against the proto (only legacy int-enum clients would send them).
    thinking_level,
    ["THINKING_LEVEL_UNSPECIFIED", "LOW", "MEDIUM", "HIGH", "MINIMAL"]
);
proto_enum!(language, ["LANGUAGE_UNSPECIFIED", "PYTHON"]);
proto_enum!(
    outcome,
    [
        "OUTCOME_UNSPECIFIED",
        "OUTCOME_OK",
        "OUTCOME_FAILED",
        "OUTCOME_DEADLINE_EXCEEDED",
    ]
);
proto_enum!(
    finish_reason,
    [
        "FINISH_REASON_UNSPECIFIED",
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MALFORMED_FUNCTION_CALL",
        "LANGUAGE",
    ]
);
proto_enum!(
    block_reason,
    [
        "BLOCK_REASON_UNSPECIFIED",
        "SAFETY",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "IMAGE_SAFETY",
    ]
);
proto_enum!(
    project_state,
    ["STATE_UNSPECIFIED", "ACTIVE", "DELETE_REQUESTED"]
);
proto_enum!(service_state, ["STATE_UNSPECIFIED", "DISABLED", "ENABLED"]);
proto_enum!(
    check_if_service_has_usage,
    ["CHECK_IF_SERVICE_HAS_USAGE_UNSPECIFIED", "SKIP", "CHECK",]
);

/// Schema `type` names by number (`google.ai.generativelanguage.v1beta.Type`).
const SCHEMA_TYPES: &[&str] = &[
    "TYPE_UNSPECIFIED",
    "STRING",
    "NUMBER",
    "INTEGER",
    "BOOLEAN",
    "ARRAY",
    "OBJECT",
    "NULL",
];

/// Every key of every nested object in camelCase. Only for typed sub-messages that hold no
/// free-form maps (speechConfig, imageConfig, retrieval configs, API key restrictions).
pub(crate) fn camelize_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (to_camel(&k), camelize_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camelize_keys).collect()),
        other => other,
    }
}

pub(crate) fn opt_camelized<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.map(camelize_keys))
}

/// A Gemini `Schema` (OpenAPI subset) with its own keys in camelCase, int64 bounds as
/// numbers and numeric `type`s as names. Property names, `enum`, `example` and `default`
/// are user data and stay untouched.
pub fn normalize_schema(v: Value) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let key = to_camel(&k);
        let v = match key.as_str() {
            "properties" | "defs" | "$defs" => match v {
                Value::Object(props) => Value::Object(
                    props
                        .into_iter()
                        .map(|(name, s)| (name, normalize_schema(s)))
                        .collect(),
                ),
                other => other,
            },
            "items" | "additionalProperties" | "not" => normalize_schema(v),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match v {
                Value::Array(items) => {
                    Value::Array(items.into_iter().map(normalize_schema).collect())
                }
                other => other,
            },
            "maxItems" | "minItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => match &v {
                Value::String(_) | Value::Number(_) => {
                    int_from_value(&v).map(Value::from).unwrap_or(v)
                }
                _ => v,
            },
            "type" => match &v {
                Value::Number(_) => enum_from_value(v.clone(), SCHEMA_TYPES)
                    .ok()
                    .flatten()
                    .map(Value::String)
                    .unwrap_or(v),
                _ => v,
            },
            _ => v,
        };
        out.insert(key, v);
    }
    Value::Object(out)
}

pub(crate) fn opt_schema<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .filter(|v| !v.is_null())
        .map(normalize_schema))
}

/// Free-form JSON, kept verbatim (`null` reads as absent).
pub(crate) fn opt_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()))
}

pub(crate) fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

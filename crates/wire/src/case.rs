//! Field-name spelling: proto field names (snake_case) vs JSON names (lowerCamelCase).

/// `thinking_budget` → `thinkingBudget`; names already in camelCase are unchanged.
/// A leading underscore (as in `_responseJsonSchema`) is kept.
pub fn to_camel(name: &str) -> String {
    let (lead, rest) = match name.strip_prefix('_') {
        Some(rest) => ("_", rest),
        None => ("", name),
    };
    let mut out = String::with_capacity(name.len());
    out.push_str(lead);
    let mut upper = false;
    for c in rest.chars() {
        if c == '_' {
            upper = !out.is_empty() && out != lead;
            continue;
        }
        if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `generationConfig` → `generation_config`; names already in snake_case are unchanged.
pub fn to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_and_snake() {
        assert_eq!(to_camel("thinking_budget"), "thinkingBudget");
        assert_eq!(to_camel("thinkingBudget"), "thinkingBudget");
        assert_eq!(to_camel("any_of"), "anyOf");
        assert_eq!(to_camel("_responseJsonSchema"), "_responseJsonSchema");
        assert_eq!(to_camel("sha1_fingerprint"), "sha1Fingerprint");
        assert_eq!(to_snake("generationConfig"), "generation_config");
        assert_eq!(to_snake("functionDeclarations"), "function_declarations");
        assert_eq!(to_snake("max_items"), "max_items");
    }
}

//! What the CLI writes: tables and field lists for people, JSON for programs, and the one
//! error line (`error: MESSAGE (STATUS, reason REASON)`).

use keyplane_client::ClientError;
use serde::Serialize;
use std::io::{self, Write};
use std::process::ExitCode;

/// Writes `text` to stdout and flushes (so streamed output appears at once).
pub fn out(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> io::Result<()> {
    out(&format!("{text}\n"))
}

/// A note for people (progress, hints): stderr, so stdout stays parseable.
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// Pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    line(&text)?;
    Ok(())
}

/// Columns separated by two spaces, each as wide as its widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(width(cell));
                }
            }
        }
        let render_row = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(widths[i].saturating_sub(width(cell))));
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = render_row(self.headers.clone());
        for row in &self.rows {
            out.push_str(&render_row(row.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn print(&self) -> io::Result<()> {
        out(&self.render())
    }
}

/// `label: value` lines, values aligned; empty values are left out.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let shown: Vec<&(&str, String)> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    let width = shown.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    shown
        .iter()
        .map(|(k, v)| format!("{k}:{} {v}\n", " ".repeat(width - k.len())))
        .collect()
}

/// `2026-01-02T03:04:05Z` → `2026-01-02`.
pub fn date(rfc3339: Option<&str>) -> String {
    match rfc3339 {
        Some(t) => t.split('T').next().unwrap_or(t).to_owned(),
        None => String::new(),
    }
}

/// `my-project (123456789012)`.
pub fn project_label(project_id: &str, number: &str) -> String {
    match (project_id.is_empty(), number.is_empty()) {
        (false, false) => format!("{project_id} ({number})"),
        (false, true) => project_id.to_owned(),
        (true, _) => format!("projects/{number}"),
    }
}

/// Prints the error line and returns exit status 1 (0 for a closed stdout pipe).
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    if let Some(io) = err.root_cause().downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    eprintln!("error: {}", error_line(err));
    ExitCode::FAILURE
}

/// The text after `error: `.
pub fn error_line(err: &anyhow::Error) -> String {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api {
            status,
            message,
            reason,
            ..
        }) => {
            let message = message.trim_end();
            let message = if message.is_empty() {
                "the server refused the request"
            } else {
                message
            };
            match reason {
                Some(r) => format!("{message} ({status}, reason {r})"),
                None => format!("{message} ({status})"),
            }
        }
        Some(ClientError::Http(e)) if e.is_connect() => format!(
            "cannot connect to the server ({}); is `keyplane serve` running there? (--server URL chooses the server)",
            root_message(err)
        ),
        Some(ClientError::Http(e)) if e.is_timeout() => {
            "the server did not answer in time".to_owned()
        }
        _ => chain(err),
    }
}

/// The error and its causes joined with `: `, leaving out a cause its parent's text
/// already ends with (wrappers that print their source).
fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The innermost cause's text.
fn root_message(err: &anyhow::Error) -> String {
    err.root_cause().to_string()
}

/// Client commands end a panic with one error line and status 1, no backtrace.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        eprintln!("error: internal error: {what}");
        std::process::exit(1);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_by_characters() {
        let mut t = Table::new(&["KEY", "NAME", "PROJECT", "CREATED"]);
        t.row(vec![
            "…abcd".into(),
            "Gemini API Key".into(),
            "p (1)".into(),
            "2026-01-02".into(),
        ]);
        t.row(vec!["…wxyz".into(), "".into(), "q (2)".into(), "".into()]);
        assert_eq!(
            t.render(),
            "KEY    NAME            PROJECT  CREATED\n\
             …abcd  Gemini API Key  p (1)    2026-01-02\n\
             …wxyz                  q (2)\n"
        );
    }

    #[test]
    fn field_lists_skip_empty_values() {
        assert_eq!(
            fields(&[
                ("name", "n".into()),
                ("uid", "".into()),
                ("displayName", "d".into())
            ]),
            "name:        n\ndisplayName: d\n"
        );
    }

    #[test]
    fn error_lines() {
        let e = anyhow::Error::new(ClientError::Api {
            code: 400,
            status: "INVALID_ARGUMENT".into(),
            message: "API key not valid. Please pass a valid API key.".into(),
            reason: Some("API_KEY_INVALID".into()),
        });
        assert_eq!(
            error_line(&e),
            "API key not valid. Please pass a valid API key. (INVALID_ARGUMENT, reason API_KEY_INVALID)"
        );
        let e = anyhow::Error::new(ClientError::Api {
            code: 404,
            status: "NOT_FOUND".into(),
            message: "gone".into(),
            reason: None,
        });
        assert_eq!(error_line(&e), "gone (NOT_FOUND)");
        let e = anyhow::anyhow!("plain");
        assert_eq!(error_line(&e), "plain");
        let e = anyhow::Error::new(std::io::Error::other("inner")).context("outer: inner");
        assert_eq!(error_line(&e), "outer: inner");
        let e = anyhow::Error::new(std::io::Error::other("inner")).context("outer");
        assert_eq!(error_line(&e), "outer: inner");
    }

    #[test]
    fn dates_and_projects() {
        assert_eq!(date(Some("2026-01-02T03:04:05.123Z")), "2026-01-02");
        assert_eq!(date(None), "");
        assert_eq!(project_label("p", "1"), "p (1)");
        assert_eq!(project_label("", "1"), "projects/1");
    }
}

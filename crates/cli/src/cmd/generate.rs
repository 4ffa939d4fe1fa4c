//! `keyplane generate "PROMPT"`: one generateContent call with an API key, found as
//! Google's SDKs find it (`--api-key`, else GOOGLE_API_KEY, else GEMINI_API_KEY).

use crate::args::GenerateArgs;
use crate::context::Ctx;
use crate::output;
use futures::StreamExt;
use keyplane_client::{resolve_api_key, text_request, Gemini};
use keyplane_wire::gemini::GenerateContentResponse;

pub async fn run(ctx: &Ctx, args: GenerateArgs) -> anyhow::Result<()> {
    let key = resolve_api_key(args.api_key.as_deref())?;
    if let Some(w) = key.warning {
        output::note(&format!("warning: {w}"));
    }
    let gemini = Gemini::new(&ctx.data_plane_base(), key.into_secret());
    let request = text_request(&args.prompt);

    if !args.stream {
        let resp = gemini.generate_content(&args.model, &request).await?;
        if ctx.json() {
            return output::json(&resp);
        }
        let text = resp.text();
        if text.is_empty() {
            explain_empty(&resp);
        } else {
            output::line(text.trim_end_matches('\n'))?;
        }
        return Ok(());
    }

    let mut chunks = gemini
        .stream_generate_content(&args.model, &request)
        .await?;
    let mut printed = String::new();
    let mut last: Option<GenerateContentResponse> = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // End the partial line before the error line.
                if !printed.is_empty() && !printed.ends_with('\n') && !ctx.json() {
                    output::out("\n")?;
                }
                return Err(e.into());
            }
        };
        if ctx.json() {
            // One chunk per line (NDJSON), as it arrives.
            output::line(&serde_json::to_string(&chunk)?)?;
        } else {
            let text = chunk.text();
            output::out(&text)?;
            printed.push_str(&text);
        }
        last = Some(chunk);
    }
    if !ctx.json() {
        if printed.is_empty() {
            if let Some(resp) = &last {
                explain_empty(resp);
            }
        } else if !printed.ends_with('\n') {
            output::out("\n")?;
        }
    }
    Ok(())
}

/// An answer without text: say why on stderr (finish reason or prompt block).
fn explain_empty(resp: &GenerateContentResponse) {
    let finish = resp
        .candidates
        .first()
        .and_then(|c| c.finish_reason.clone());
    let blocked = resp
        .prompt_feedback
        .as_ref()
        .and_then(|f| f.block_reason.clone());
    match (finish, blocked) {
        (_, Some(b)) => output::note(&format!("(no text: the prompt was blocked, {b})")),
        (Some(f), None) => output::note(&format!("(no text; finishReason {f})")),
        (None, None) => output::note("(no text in the answer)"),
    }
}

//! Renders a conversation with the model's own Jinja chat template (`tokenizer.chat_template`
//! in the GGUF), the way Hugging Face's `apply_chat_template` does.
//!
//! llama.cpp's built-in template engine is not used: it only recognises template families
//! and drops SmolLM2's default system prompt (spec/local-model.md).

use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use crate::{ChatMessage, Role};

const TEMPLATE_NAME: &str = "chat_template";

pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are exposed to the template as Hugging
    /// Face does (SmolLM2's template does not use them, others do).
    pub(crate) fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // transformers renders chat templates with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The prompt for `messages`, preceded by a system turn when `system` is set, ending with
    /// the opening of the assistant's turn (`add_generation_prompt=true`).
    pub(crate) fn render(
        &self,
        system: Option<&str>,
        messages: &[ChatMessage],
    ) -> Result<String, minijinja::Error> {
        let mut all = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = system {
            all.push(TemplateMessage {
                role: "system",
                content: system,
            });
        }
        all.extend(messages.iter().map(|m| TemplateMessage {
            role: match m.role {
                Role::User => "user",
                Role::Model => "assistant",
            },
            content: &m.text,
        }));
        self.env.get_template(TEMPLATE_NAME)?.render(context! {
            messages => all,
            add_generation_prompt => true,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-for-byte copy of `tokenizer.chat_template` in SmolLM2-135M-Instruct.Q4_1.gguf
    /// (the model tests check that the copy still matches the file).
    const SMOLLM2_TEMPLATE: &str = include_str!("smollm2_chat_template.jinja");

    fn template() -> ChatTemplate {
        ChatTemplate::new(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>").unwrap()
    }

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: Role::User,
            text: text.into(),
        }
    }

    #[test]
    fn without_system_instruction_the_default_system_prompt_is_used() {
        let out = template().render(None, &[user("Hi")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn system_instruction_replaces_the_default_system_prompt() {
        let out = template()
            .render(Some("Answer in French."), &[user("Hi")])
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nAnswer in French.<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!out.contains("SmolLM"));
    }

    #[test]
    fn model_turns_render_as_assistant_in_order() {
        let messages = [
            user("2+2?"),
            ChatMessage {
                role: Role::Model,
                text: "4".into(),
            },
            user("and 3+3?"),
        ];
        let out = template().render(Some("S"), &messages).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn message_text_is_not_interpreted_as_template_syntax() {
        let out = template()
            .render(None, &[user("{{ 7*7 }} {% if %}")])
            .unwrap();
        assert!(out.contains("user\n{{ 7*7 }} {% if %}<|im_end|>"));
    }

    #[test]
    fn raise_exception_surfaces_as_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let err = t.render(None, &[user("x")]).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn bos_and_eos_tokens_are_available_to_templates() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(t.render(None, &[user("x")]).unwrap(), "<s>x</s>");
    }
}

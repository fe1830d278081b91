//! The request bodies of the inference routes, read into one [`Ask`]: which model variant, which document,
//! which instruction, how to sample. Every check that can fail before the engine runs is made here (422).

use base64::Engine as _;
use image::RgbImage;
use serde::Deserialize;

use super::cache::content_hash;
use super::error::ApiError;
use crate::engine::config::ModelConfig;
use crate::engine::model::Document;
use crate::engine::sample::SamplingParams;
use crate::page::preprocess;

/// Limits that requests are checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most tokens one request may ask for.
    pub max_tokens: usize,
    pub default_tokens: usize,
}

/// The served model and its adapters, by the names requests use (index 0 is the base model).
#[derive(Debug, Clone)]
pub struct Variants {
    pub names: Vec<String>,
}

impl Variants {
    /// An adapter by name (`None`: the base model).
    pub fn adapter(&self, name: Option<&str>) -> Result<usize, ApiError> {
        match name {
            None => Ok(0),
            Some(name) => self.names.iter().skip(1).position(|n| n == name).map(|i| i + 1).ok_or_else(|| {
                ApiError::not_found(format!(
                    "unknown adapter {name:?}; this server has {}",
                    if self.names.len() > 1 { self.names[1..].join(", ") } else { "none".into() }
                ))
            }),
        }
    }

    /// A chat `model`: the base model's name or an adapter's; absent means the base model.
    pub fn model(&self, name: Option<&str>) -> Result<usize, ApiError> {
        match name {
            None => Ok(0),
            Some(name) => self.names.iter().position(|n| n == name).ok_or_else(|| {
                ApiError::not_found(format!("unknown model {name:?}; this server has {}", self.names.join(", ")))
            }),
        }
    }
}

/// The document's pages as the model sees them, at most `max_pages` of them (422 otherwise, as for a document that
/// cannot be rendered).
pub fn pages(config: &ModelConfig, document: &Document, max_pages: usize) -> Result<Vec<RgbImage>, ApiError> {
    let pages =
        config.pages(document).map_err(|e| ApiError::unprocessable(format!("cannot render the document: {e:#}")))?;
    if pages.len() > max_pages {
        return Err(ApiError::unprocessable(format!(
            "the document has {} pages; this server takes at most {max_pages} (--max-pages)",
            pages.len()
        )));
    }
    Ok(pages)
}

/// A document, decoded, with its content hash (the cache key).
#[derive(Debug, Clone)]
pub struct DocumentInput {
    pub document: Document,
    pub hash: [u8; 32],
}

impl DocumentInput {
    pub fn text(text: String) -> Result<Self, ApiError> {
        if text.trim().is_empty() {
            return Err(ApiError::unprocessable("the document is empty"));
        }
        let hash = content_hash("text", text.as_bytes());
        Ok(Self { document: Document::Text(text), hash })
    }

    /// A PNG or JPEG in base64, bare or as a `data:image/...;base64,` URL. `field` names it in errors.
    pub fn image(field: &str, data: &str) -> Result<Self, ApiError> {
        let encoded = match data.strip_prefix("data:") {
            Some(url) => {
                let (meta, payload) = url
                    .split_once(',')
                    .ok_or_else(|| ApiError::unprocessable(format!("{field}: a data URL needs a comma")))?;
                if !meta.ends_with(";base64") {
                    return Err(ApiError::unprocessable(format!("{field}: only base64 data URLs are accepted")));
                }
                payload
            }
            None => data,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| ApiError::unprocessable(format!("{field}: not valid base64: {e}")))?;
        if !preprocess::is_image(&bytes) {
            return Err(ApiError::unprocessable(format!("{field}: not a PNG or JPEG image")));
        }
        let image = preprocess::decode_image(&bytes)
            .map_err(|e| ApiError::unprocessable(format!("{field}: cannot decode the image: {e:#}")))?;
        Ok(Self { document: Document::Image(image), hash: content_hash("image", &bytes) })
    }
}

/// One question for the engine.
#[derive(Debug, Clone)]
pub struct Ask {
    pub variant: usize,
    pub document: DocumentInput,
    pub instruction: String,
    pub params: SamplingParams,
}

/// Sampling settings shared by both routes, checked against the limits.
fn params(
    limits: &Limits,
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<usize>,
    repetition_penalty: Option<f64>,
    seed: Option<u64>,
) -> Result<SamplingParams, ApiError> {
    let max_new_tokens = max_tokens.unwrap_or(limits.default_tokens);
    if max_new_tokens == 0 || max_new_tokens > limits.max_tokens {
        return Err(ApiError::unprocessable(format!(
            "max tokens must be between 1 and {} (this server's limit), got {max_new_tokens}",
            limits.max_tokens
        )));
    }
    let defaults = SamplingParams::default();
    let temperature = temperature.unwrap_or(defaults.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::unprocessable(format!("temperature must be between 0 and 2, got {temperature}")));
    }
    let params = SamplingParams {
        max_new_tokens,
        temperature,
        top_k: top_k.unwrap_or(defaults.top_k),
        top_p: top_p.unwrap_or(defaults.top_p),
        repetition_penalty: repetition_penalty.unwrap_or(defaults.repetition_penalty),
        seed: seed.unwrap_or(defaults.seed),
    };
    params.validate().map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(params)
}

/// `POST /api/inference/instruct`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructRequest {
    /// The document's text (rendered to pages as the model was trained to see them).
    pub document: Option<String>,
    /// Or a page image: PNG or JPEG, base64.
    pub image: Option<String>,
    pub instruction: String,
    #[serde(alias = "max_tokens", alias = "max_new_tokens")]
    pub max_length: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<u64>,
    pub adapter: Option<String>,
    #[serde(default)]
    pub stream: bool,
}

/// The document of a request that gives it as `document` (text) or `image` (base64), exactly one of them.
pub fn document_of(document: Option<String>, image: Option<&str>) -> Result<DocumentInput, ApiError> {
    match (document, image) {
        (Some(text), None) => DocumentInput::text(text),
        (None, Some(image)) => DocumentInput::image("image", image),
        (Some(_), Some(_)) => Err(ApiError::unprocessable("give either `document` or `image`, not both")),
        (None, None) => Err(ApiError::unprocessable("missing the document: give `document` (text) or `image`")),
    }
}

impl InstructRequest {
    pub fn into_ask(self, variants: &Variants, limits: &Limits) -> Result<Ask, ApiError> {
        let variant = variants.adapter(self.adapter.as_deref())?;
        if self.instruction.trim().is_empty() {
            return Err(ApiError::unprocessable("the instruction is empty"));
        }
        let params = params(
            limits,
            self.max_length,
            self.temperature,
            self.top_p,
            self.top_k,
            self.repetition_penalty,
            self.seed,
        )?;
        let document = document_of(self.document, self.image.as_deref())?;
        Ok(Ask { variant, document, instruction: self.instruction, params })
    }
}

/// `POST /v1/chat/completions` (OpenAI's fields; others are accepted and ignored, as OpenAI-compatible servers
/// do, except `n` other than 1).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl Message {
    fn texts(&self) -> Vec<&str> {
        match &self.content {
            None => Vec::new(),
            Some(Content::Text(text)) => vec![text.as_str()],
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                })
                .collect(),
        }
    }

    fn images(&self) -> Vec<&str> {
        match &self.content {
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::ImageUrl { image_url } => Some(image_url.url.as_str()),
                    Part::Text { .. } => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl ChatRequest {
    /// The instruction is the last user message's last text part. The document is, in this order: the last
    /// `image_url` of the user messages (a base64 data URL); the system (or developer) messages' text; the
    /// last user message's earlier text parts. Assistant turns are history the model does not take.
    pub fn into_ask(self, variants: &Variants, limits: &Limits) -> Result<Ask, ApiError> {
        let variant = variants.model(self.model.as_deref())?;
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::unprocessable(format!("n must be 1 (one answer per request), got {n}")));
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::unprocessable("max_tokens and max_completion_tokens disagree"))
            }
            (a, b) => a.or(b),
        };
        let params = params(limits, max_tokens, self.temperature, self.top_p, None, None, self.seed)?;
        let last = self.messages.last().ok_or_else(|| ApiError::unprocessable("messages is empty"))?;
        if last.role != Role::User {
            return Err(ApiError::unprocessable("the last message must be the user's"));
        }
        let mut texts = last.texts();
        let instruction = texts
            .pop()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ApiError::unprocessable("the last user message has no text (the instruction)"))?
            .to_string();
        let image = self.messages.iter().filter(|m| m.role == Role::User).flat_map(|m| m.images()).next_back();
        let system: Vec<&str> = self
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .flat_map(|m| m.texts())
            .collect();
        let document = if let Some(url) = image {
            if !url.starts_with("data:") {
                return Err(ApiError::unprocessable(
                    "image_url: only base64 data URLs are accepted (this server fetches nothing)",
                ));
            }
            DocumentInput::image("image_url", url)?
        } else if !system.is_empty() {
            DocumentInput::text(system.join("\n\n"))?
        } else if !texts.is_empty() {
            DocumentInput::text(texts.join("\n\n"))?
        } else {
            return Err(ApiError::unprocessable(
                "no document: send an image_url part, a system message holding the document's text, or two text \
                 parts in the user message (the document, then the instruction)",
            ));
        };
        Ok(Ask { variant, document, instruction, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants() -> Variants {
        Variants { names: vec!["tiny".into(), "legal".into()] }
    }

    fn limits() -> Limits {
        Limits { max_tokens: 64, default_tokens: 16 }
    }

    fn chat(body: serde_json::Value) -> Result<Ask, ApiError> {
        serde_json::from_value::<ChatRequest>(body).unwrap().into_ask(&variants(), &limits())
    }

    fn text_of(ask: &Ask) -> &str {
        match &ask.document.document {
            Document::Text(t) => t,
            Document::Image(_) => panic!("an image"),
        }
    }

    #[test]
    fn chat_document_comes_from_system_or_earlier_parts_and_model_picks_the_adapter() {
        let ask = chat(serde_json::json!({"model": "legal", "messages": [
            {"role": "system", "content": "Total: 12 EUR"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "What is the total?"}]}]}))
        .unwrap();
        assert_eq!((ask.variant, text_of(&ask), ask.instruction.as_str()), (1, "Total: 12 EUR", "What is the total?"));
        assert_eq!(ask.params.max_new_tokens, 16);
        let ask = chat(serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Page one"}, {"type": "text", "text": "Page two"},
            {"type": "text", "text": "Summarise."}]}], "max_tokens": 5}))
        .unwrap();
        assert_eq!((ask.variant, text_of(&ask), ask.params.max_new_tokens), (0, "Page one\n\nPage two", 5));
    }

    #[test]
    fn chat_refusals_say_what_is_wrong() {
        let cases = [
            (serde_json::json!({"messages": []}), 422, "messages is empty"),
            (serde_json::json!({"messages": [{"role": "user", "content": "q"}]}), 422, "no document"),
            (serde_json::json!({"model": "gpt-4", "messages": [{"role": "user", "content": "q"}]}), 404, "gpt-4"),
            (
                serde_json::json!({"messages": [{"role": "system", "content": "d"}, {"role": "user", "content": "q"}],
                "max_tokens": 65}),
                422,
                "between 1 and 64",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": "q"}]}]}),
                422,
                "data URLs",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "data:image/png;base64,@@@"}}, {"type": "text", "text": "q"}]}]}),
                422,
                "not valid base64",
            ),
            (
                serde_json::json!({"messages": [{"role": "system", "content": "d"}, {"role": "user", "content": "q"}],
                "n": 2}),
                422,
                "n must be 1",
            ),
        ];
        for (body, status, words) in cases {
            let err = chat(body.clone()).unwrap_err();
            assert_eq!(err.status.as_u16(), status, "{body}: {err}");
            assert!(err.message.contains(words), "{body}: {err}");
        }
    }

    #[test]
    fn instruct_checks_document_instruction_adapter_and_sampling() {
        let ask = |body: serde_json::Value| {
            serde_json::from_value::<InstructRequest>(body).unwrap().into_ask(&variants(), &limits())
        };
        let ok = ask(serde_json::json!({"document": "d", "instruction": "q", "adapter": "legal", "max_length": 3,
            "temperature": 0.5, "top_p": 0.9, "seed": 7}))
        .unwrap();
        assert_eq!((ok.variant, ok.params.max_new_tokens, ok.params.seed), (1, 3, 7));
        for (body, status) in [
            (serde_json::json!({"document": "d", "instruction": " "}), 422),
            (serde_json::json!({"instruction": "q"}), 422),
            (serde_json::json!({"document": "d", "image": "AAAA", "instruction": "q"}), 422),
            (serde_json::json!({"image": "not base64!", "instruction": "q"}), 422),
            (serde_json::json!({"image": "aGVsbG8=", "instruction": "q"}), 422),
            (serde_json::json!({"document": "d", "instruction": "q", "adapter": "nope"}), 404),
            (serde_json::json!({"document": "d", "instruction": "q", "temperature": -1}), 422),
            (serde_json::json!({"document": "d", "instruction": "q", "top_p": 0}), 422),
            (serde_json::json!({"document": "d", "instruction": "q", "max_length": 0}), 422),
        ] {
            assert_eq!(ask(body.clone()).unwrap_err().status.as_u16(), status, "{body}");
        }
        let unknown = serde_json::from_slice::<InstructRequest>(br#"{"document": "d", "instruction": "q", "x": 1}"#);
        assert_eq!(ApiError::from_json(unknown.unwrap_err()).status.as_u16(), 422);
        let syntax = serde_json::from_slice::<InstructRequest>(br#"{"document": "#);
        assert_eq!(ApiError::from_json(syntax.unwrap_err()).status.as_u16(), 400);
    }
}

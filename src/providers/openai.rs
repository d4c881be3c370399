//! OpenAI-compatible adapter. Temporary stub until branch `provider` merges.
use super::{Call, Completion, Provider, ProviderError};
use async_trait::async_trait;

#[derive(Debug)]
pub struct OpenAiProvider;

impl OpenAiProvider {
    pub fn new(_base_url: impl Into<String>, _http: reqwest::Client) -> Self {
        OpenAiProvider
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, _call: Call<'_>) -> Result<Completion, ProviderError> {
        unimplemented!()
    }
}

//! OpenAI-compatible adapter. Placeholder until implemented.

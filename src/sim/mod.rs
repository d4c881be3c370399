//! Provider simulator. Placeholder until implemented (branch `provider`).

/// Simulator settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub latency: Option<String>,
}

/// Placeholder.
pub struct SimServer;
impl SimServer {
    pub fn openai_base_url(&self) -> String {
        unimplemented!()
    }
    pub async fn shutdown(self) {}
}
/// Placeholder.
pub async fn spawn(_addr: std::net::SocketAddr, _config: SimConfig) -> std::io::Result<SimServer> {
    unimplemented!()
}

//! How a client command (`submit`, `get`, `wait`, `bulk …`) reaches a running server: the
//! `--server` and `--token` options, defaulting to what the `--config` file says.

use clap::Args;
use sluice::client::Client;
use sluice::config::Config;
use std::path::Path;

#[derive(Args)]
pub struct ServerArgs {
    /// Base URL of a running `sluice serve` [default: the address the --config file listens
    /// on, else http://127.0.0.1:8080].
    #[arg(long, env = "SLUICE_SERVER")]
    server: Option<String>,
    /// The tenant's API token [default: the first tenant's token in the --config file, else
    /// the built-in sk-sluice-demo].
    #[arg(long, env = "SLUICE_TOKEN")]
    token: Option<String>,
}

impl ServerArgs {
    /// The client these arguments name. What they leave out comes from the configuration
    /// file when one is given (its address and first tenant's token), else from the built-in
    /// configuration. The file's types and keys are checked, not the providers' secrets,
    /// which a client's machine need not have.
    pub fn client(self, config: Option<&Path>) -> anyhow::Result<Client> {
        let loaded;
        let config = match config {
            Some(path) => {
                loaded = Config::load_for_client(path)?;
                &loaded
            }
            None => &Config::builtin(),
        };
        let server = match self.server {
            Some(server) => server,
            None => config.server.client_url(),
        };
        let token = match self.token {
            Some(token) => token,
            None => {
                let tenant = config.tenants.first().ok_or_else(|| {
                    anyhow::anyhow!("the configuration has no tenant; give --token")
                })?;
                if let Some(problem) = config.secret_problem("tenants[0].token") {
                    anyhow::bail!("{problem}; give --token, or set the variable");
                }
                tenant.token.expose().to_string()
            }
        };
        Ok(Client::new(server, token))
    }
}

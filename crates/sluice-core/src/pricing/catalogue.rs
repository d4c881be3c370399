//! The price catalogue: default prices of the common models of each provider family, shipped
//! as one data file (`catalogue.toml`, compiled in) so a deployment needs no `price` of its
//! own for a well-known model, and every default names the date and source it was taken from.
//!
//! Prices are data, not code: updating one is an edit of the TOML file, and a deployment in
//! `sluice.toml` overrides the catalogue whenever the two disagree.

use super::{MicrosPerMillion, Price};
use crate::provider_kind::ProviderKind;
use crate::table::Table;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The catalogue file, as shipped.
pub const CATALOGUE_TOML: &str = include_str!("catalogue.toml");

/// The default price of one model (or several ids of the same model).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// The API family of the deployment's provider.
    pub provider: ProviderKind,
    /// The provider's model ids this price applies to.
    pub models: Vec<String>,
    pub input: MicrosPerMillion,
    pub output: MicrosPerMillion,
    #[serde(default)]
    pub cached_input: Option<MicrosPerMillion>,
    #[serde(default)]
    pub cache_write: Option<MicrosPerMillion>,
    /// The provider's batch tier, where it has one.
    #[serde(default)]
    pub batch: Option<BatchPrice>,
    /// When the source gave this price.
    pub as_of: String,
    pub source: String,
    /// Anything not stated outright by the source.
    #[serde(default)]
    pub note: Option<String>,
}

/// Batch-tier prices (cache prices are not stated by the sources for batch).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPrice {
    pub input: MicrosPerMillion,
    pub output: MicrosPerMillion,
}

impl CatalogueEntry {
    /// The real-time price.
    pub fn price(&self) -> Price {
        Price {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
        }
    }

    /// The batch-tier price, where the provider has one.
    pub fn batch_price(&self) -> Option<Price> {
        self.batch.map(|b| Price {
            input: b.input,
            output: b.output,
            cached_input: None,
            cache_write: None,
        })
    }
}

/// Every entry of a catalogue file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(rename = "model")]
    pub entries: Vec<CatalogueEntry>,
}

#[derive(Debug, thiserror::Error)]
#[error("price catalogue: {0}")]
pub struct CatalogueError(String);

impl Catalogue {
    /// Parses a catalogue file; a model id listed twice for one family is an error, since
    /// which price won would otherwise depend on the order of the file.
    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let catalogue: Catalogue =
            toml::from_str(text).map_err(|e| CatalogueError(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for entry in &catalogue.entries {
            for model in &entry.models {
                if !seen.insert((entry.provider.as_str(), model.as_str())) {
                    return Err(CatalogueError(format!(
                        "{} model \"{model}\" is listed twice; keep one price per model",
                        entry.provider.as_str()
                    )));
                }
            }
        }
        Ok(catalogue)
    }

    /// The shipped catalogue (a test proves it parses).
    pub fn shipped() -> &'static Catalogue {
        static SHIPPED: OnceLock<Catalogue> = OnceLock::new();
        SHIPPED
            .get_or_init(|| Catalogue::parse(CATALOGUE_TOML).expect("the shipped catalogue parses"))
    }

    /// The entry for a model id of an API family: ids match exactly (a dated snapshot may be
    /// priced differently from its alias, so no prefix guessing).
    pub fn lookup(&self, provider: ProviderKind, model: &str) -> Option<&CatalogueEntry> {
        self.entries
            .iter()
            .find(|e| e.provider == provider && e.models.iter().any(|m| m == model))
    }
}

impl Catalogue {
    /// `sluice prices`: one line per model id, then each entry's date, source and note.
    pub fn to_table(&self) -> String {
        let money =
            |p: Option<MicrosPerMillion>| p.map_or("-".to_string(), MicrosPerMillion::for_reading);
        // Provider and model are text; the prices after them line up as numbers.
        let mut table = Table::new(
            [
                "provider",
                "model",
                "input",
                "cached_in",
                "cache_write",
                "output",
                "batch_in",
                "batch_out",
            ],
            2,
        );
        for e in &self.entries {
            for model in &e.models {
                table.row([
                    e.provider.as_str().to_string(),
                    model.clone(),
                    money(Some(e.input)),
                    money(e.cached_input),
                    money(e.cache_write),
                    money(Some(e.output)),
                    money(e.batch.map(|b| b.input)),
                    money(e.batch.map(|b| b.output)),
                ]);
            }
        }
        let mut out = table.render();
        out.push_str(
            "\nUSD per million tokens; \"-\": not stated (charged the input price). Sources:\n",
        );
        for e in &self.entries {
            out.push_str(&format!(
                "  {}: as of {}; {}",
                e.models.join(", "),
                e.as_of,
                e.source
            ));
            if let Some(note) = &e.note {
                out.push_str(&format!(" ({note})"));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_parses_and_cites_every_price() {
        let catalogue = Catalogue::shipped();
        assert!(catalogue.entries.len() >= 6);
        for entry in &catalogue.entries {
            assert!(
                !entry.source.is_empty() && !entry.as_of.is_empty(),
                "{entry:?}"
            );
            assert!(!entry.models.is_empty(), "{entry:?}");
        }
    }

    #[test]
    fn lookup_is_by_family_and_exact_model_id() {
        let catalogue = Catalogue::shipped();
        let mini = catalogue
            .lookup(ProviderKind::Openai, "gpt-4o-mini")
            .unwrap();
        assert_eq!(mini.price().input, MicrosPerMillion(150_000));
        assert_eq!(mini.price().cached_input, Some(MicrosPerMillion(75_000)));
        assert_eq!(
            mini.batch_price().unwrap().output,
            MicrosPerMillion(300_000)
        );
        let sonnet = catalogue
            .lookup(ProviderKind::Anthropic, "claude-sonnet-4-5")
            .unwrap();
        assert_eq!(
            sonnet.price().cache_write,
            Some(MicrosPerMillion(3_750_000))
        );
        assert_eq!(
            catalogue
                .lookup(ProviderKind::Gemini, "gemini-2.5-flash")
                .unwrap()
                .price()
                .output,
            MicrosPerMillion(2_500_000)
        );
        // The family matters, and no price is guessed from a prefix.
        assert!(catalogue
            .lookup(ProviderKind::Anthropic, "gpt-4o")
            .is_none());
        assert!(catalogue
            .lookup(ProviderKind::Openai, "gpt-4o-2024-05-13")
            .is_none());
        assert!(catalogue.lookup(ProviderKind::Openai, "gpt-4.1").is_none());
    }

    #[test]
    fn the_listing_shows_every_model_with_exact_prices_and_sources() {
        let table = Catalogue::shipped().to_table();
        let mini = table.lines().find(|l| l.contains("gpt-4o-mini")).unwrap();
        assert!(
            mini.split_whitespace().collect::<Vec<_>>()
                == [
                    "openai",
                    "gpt-4o-mini",
                    "0.15",
                    "0.075",
                    "-",
                    "0.60",
                    "0.075",
                    "0.30"
                ],
            "{table}"
        );
        assert!(
            table.contains("Sources:") && table.contains("as of"),
            "{table}"
        );
    }

    #[test]
    fn a_model_listed_twice_is_refused() {
        let entry = r#"
            [[model]]
            provider = "openai"
            models = ["m"]
            input = "1"
            output = "2"
            as_of = "today"
            source = "test"
        "#;
        let err = Catalogue::parse(&format!("{entry}{entry}")).unwrap_err();
        assert!(err.to_string().contains("\"m\" is listed twice"), "{err}");
        let err = Catalogue::parse("[[model]]\nprovider = \"openai\"\nmodels = []\ninput = 1.1234567\noutput = 1\nas_of = \"x\"\nsource = \"y\"").unwrap_err();
        assert!(err.to_string().contains("more than 6 decimals"), "{err}");
    }
}

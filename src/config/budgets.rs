//! `[[budgets]]` in `sluice.toml`: what a budget is written as, and the checks that name each
//! mistake by its path (`budgets[1].on_exceed: unknown route "cheap"`).
//!
//! Amounts and thresholds are kept as their decimal text until validation, so a bad decimal
//! is reported with every other problem instead of stopping the parse at the first.

use super::{did_you_mean, Config, Problem};
use crate::period::Period;
use crate::pricing::{decimal_text, parse_decimal, DecimalError, PicoUsd};
use serde::{Deserialize, Deserializer};

/// Thresholds are read to this many decimals of the limit: basis points (0.8 = 8,000).
pub const THRESHOLD_DECIMALS: u32 = 4;
/// A threshold of the whole limit, in basis points.
pub const WHOLE: u32 = 10_000;

/// One `[[budgets]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Unique; named in errors, logs and `GET /v1/budgets`.
    pub name: String,
    /// The tenant whose jobs it covers. With a tag (`user`, `team`, `feature`) it narrows the
    /// tag to that tenant; a tag without `tenant` gives *each* tenant its own allowance for
    /// that tag value (tags are per tenant, and tenants are walls).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    pub period: Period,
    /// USD, exact decimal text (`"25.00"`) or a TOML integer; a TOML float is refused (see
    /// [`amount`]).
    #[serde(deserialize_with = "amount")]
    pub limit_usd: String,
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Fractions of the limit whose crossing is logged once per period (`[0.8, 1.0]`).
    #[serde(default = "default_warn_at", deserialize_with = "decimals")]
    pub warn_at: Vec<String>,
}

/// What happens to a job that would take a budget past its limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    /// `"reject"`: the API refuses new jobs while the budget is spent; a queued job fails
    /// with `budget_exceeded`.
    #[default]
    Reject,
    /// `{ downgrade = "route" }`: the job runs on that (cheaper) route instead, if it fits.
    Downgrade(String),
}

fn default_warn_at() -> Vec<String> {
    vec!["0.8".into(), "1".into()]
}

/// An amount of money as its decimal text: a string, or a TOML integer. A TOML float is
/// refused: TOML hands it over as a binary float, which holds an amount with twelve decimals
/// (a pico-dollar) exactly only up to about fifteen digits in all, and money is never
/// rounded silently. (Prices may be floats: six decimals of a price per million tokens stay
/// within what a float holds exactly.)
fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(i) => Ok(i.to_string()),
        Raw::Text(text) => Ok(text),
        Raw::Float(f) => Err(serde::de::Error::custom(format!(
            "{f} is a TOML float, which cannot hold every amount exactly; write the amount as a \
             string: \"{f}\""
        ))),
    }
}

fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    decimal_text(d)
}

fn decimals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Text(#[serde(deserialize_with = "decimal")] String);
    Ok(Vec::<Text>::deserialize(d)?
        .into_iter()
        .map(|t| t.0)
        .collect())
}

/// Which tag a budget is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    User,
    Team,
    Feature,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::User => "user",
            Tag::Team => "team",
            Tag::Feature => "feature",
        }
    }
}

impl BudgetConfig {
    /// The tag scope, when exactly one is given (validation reports the other cases).
    pub fn tag(&self) -> Option<(Tag, &str)> {
        [
            (Tag::User, &self.user),
            (Tag::Team, &self.team),
            (Tag::Feature, &self.feature),
        ]
        .into_iter()
        .find_map(|(tag, value)| value.as_deref().map(|v| (tag, v)))
    }

    /// The limit in pico-USD.
    pub fn limit(&self) -> Result<PicoUsd, String> {
        PicoUsd::parse_usd(&self.limit_usd)
    }

    /// The warning thresholds in basis points of the limit, ascending.
    pub fn thresholds(&self) -> Result<Vec<u32>, String> {
        let mut out = Vec::with_capacity(self.warn_at.len());
        for text in &self.warn_at {
            let bad = || format!("{text} is not a fraction of the limit above 0 and at most 1");
            let points = match parse_decimal(text, THRESHOLD_DECIMALS) {
                Ok(p) => p,
                Err(DecimalError::TooPrecise) => {
                    return Err(format!(
                        "{text} has more than {THRESHOLD_DECIMALS} decimals"
                    ))
                }
                Err(_) => return Err(bad()),
            };
            if points <= 0 || points > i64::from(WHOLE) {
                return Err(bad());
            }
            out.push(points as u32);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Every problem of budget `i`, each with its path.
    pub fn problems(&self, i: usize, config: &Config) -> Vec<Problem> {
        let path = |field: &str| format!("budgets[{i}].{field}");
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| problems.push(Problem { path, message });
        if self.name.is_empty() {
            problem(path("name"), "must not be empty".into());
        }
        if config.budgets[..i].iter().any(|b| b.name == self.name) {
            problem(
                path("name"),
                format!("budget \"{}\" is defined twice", self.name),
            );
        }
        let tags = [&self.user, &self.team, &self.feature]
            .iter()
            .filter(|t| t.is_some())
            .count();
        if tags == 0 && self.tenant.is_none() {
            problem(
                format!("budgets[{i}]"),
                "has no scope: give tenant, user, team or feature".into(),
            );
        }
        if tags > 1 {
            problem(
                format!("budgets[{i}]"),
                "give one of user, team or feature (optionally with tenant), not several".into(),
            );
        }
        if let Some(tenant) = &self.tenant {
            if config.tenant(tenant).is_none() {
                problem(path("tenant"), format!("unknown tenant \"{tenant}\""));
            }
        }
        match self.limit() {
            Ok(PicoUsd(0)) => problem(path("limit_usd"), "must be above 0".into()),
            Ok(_) => {}
            Err(message) => problem(path("limit_usd"), message),
        }
        if let Err(message) = self.thresholds() {
            problem(path("warn_at"), message);
        }
        if let OnExceed::Downgrade(route) = &self.on_exceed {
            if config.resolve_model(route).is_none() {
                let known = config.model_names();
                let hint = did_you_mean(route, known.iter().copied()).map_or_else(
                    || format!("known: {}", known.join(", ")),
                    |near| format!("did you mean `{near}`?"),
                );
                problem(
                    path("on_exceed"),
                    format!("unknown route \"{route}\" to downgrade to; {hint}"),
                );
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(budgets: &str) -> Vec<String> {
        let text = format!("{}\n{budgets}", crate::config::BUILTIN);
        let config = Config::parse(&text, "t.toml", &|_| None).unwrap();
        config.validate().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_good_budget_has_no_problems_and_reads_exactly() {
        let text = format!(
            "{}\n{}",
            crate::config::BUILTIN,
            r#"
            [[budgets]]
            name = "demo-monthly"
            tenant = "demo"
            period = "month"
            limit_usd = "25.00"

            [[budgets]]
            name = "search-daily"
            team = "search"
            period = "day"
            limit_usd = "0.50"
            on_exceed = { downgrade = "fast" }
            warn_at = [0.5, 0.9]
            "#
        );
        let config = Config::parse(&text, "t.toml", &|_| None).unwrap();
        assert_eq!(config.validate(), vec![]);
        let monthly = &config.budgets[0];
        assert_eq!(monthly.limit().unwrap().0, 25_000_000_000_000);
        assert_eq!(monthly.on_exceed, super::OnExceed::Reject);
        assert_eq!(monthly.thresholds().unwrap(), vec![8_000, 10_000]);
        let daily = &config.budgets[1];
        assert_eq!(daily.limit().unwrap().0, 500_000_000_000);
        assert_eq!(daily.on_exceed, super::OnExceed::Downgrade("fast".into()));
        assert_eq!(daily.thresholds().unwrap(), vec![5_000, 9_000]);
        assert_eq!(daily.tag(), Some((super::Tag::Team, "search")));
    }

    /// A TOML float cannot hold every amount exactly: it is refused by its path, with the
    /// string to write instead; an integer is exact and accepted.
    #[test]
    fn a_float_limit_is_refused_by_its_path() {
        let budget = |limit: &str| {
            format!(
                "{}\n[[budgets]]\nname = \"b\"\ntenant = \"demo\"\nperiod = \"day\"\nlimit_usd = {limit}\n",
                crate::config::BUILTIN
            )
        };
        let err = Config::from_toml(&budget("0.5"), "t.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("budgets[0].limit_usd: 0.5 is a TOML float") && err.contains("\"0.5\""),
            "{err}"
        );
        let config = Config::from_toml(&budget("25"), "t.toml", &|_| None).unwrap();
        assert_eq!(config.budgets[0].limit().unwrap().0, 25_000_000_000_000);
    }

    #[test]
    fn every_budget_mistake_is_named_by_its_path() {
        let found = problems(
            r#"
            [[budgets]]
            name = "nothing"
            period = "day"
            limit_usd = "2x"

            [[budgets]]
            name = "nothing"
            team = "a"
            feature = "b"
            tenant = "nobody"
            period = "month"
            limit_usd = "1.0000000000001"
            on_exceed = { downgrade = "cheap" }
            warn_at = [0.8, 1.5]
            "#,
        );
        for expected in [
            "budgets[0]: has no scope: give tenant, user, team or feature",
            "budgets[0].limit_usd: \"2x\" is not an amount in USD like 25.00",
            "budgets[1].name: budget \"nothing\" is defined twice",
            "budgets[1]: give one of user, team or feature (optionally with tenant), not several",
            "budgets[1].tenant: unknown tenant \"nobody\"",
            "budgets[1].limit_usd: \"1.0000000000001\" has more than 12 decimals",
            "budgets[1].on_exceed: unknown route \"cheap\" to downgrade to; known: ",
            "budgets[1].warn_at: 1.5 is not a fraction of the limit above 0 and at most 1",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {found:?}"
            );
        }
        let misspelt = problems(
            "[[budgets]]\nname = \"m\"\ntenant = \"demo\"\nperiod = \"day\"\nlimit_usd = 1\n\
             on_exceed = { downgrade = \"fsat\" }\n",
        );
        assert_eq!(
            misspelt,
            vec!["budgets[0].on_exceed: unknown route \"fsat\" to downgrade to; did you mean `fast`?"]
        );
        let zero = problems(
            "[[budgets]]\nname = \"z\"\ntenant = \"demo\"\nperiod = \"day\"\nlimit_usd = 0\n",
        );
        assert_eq!(zero, vec!["budgets[0].limit_usd: must be above 0"]);
    }
}

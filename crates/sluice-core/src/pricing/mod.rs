//! Prices and the exact cost of a call.
//!
//! Money never passes through a binary float. Prices are written in USD per million tokens
//! (`2.50`) and read from their decimal text into integer micro-dollars per million tokens.
//! That unit has a useful property: micro-dollars per *million* tokens is the same number as
//! pico-dollars per *one* token, so `tokens × price` is an exact integer amount in
//! pico-dollars ([`PicoUsd`]) for any price with up to six decimals. Cost rows store that
//! integer; reports sum integers.

pub mod catalogue;

use crate::usage::Usage;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A price in micro-USD per million tokens (equivalently, pico-USD per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct MicrosPerMillion(pub i64);

impl MicrosPerMillion {
    /// Parses a decimal USD-per-million-tokens figure (`"2.5"`, `"0.075"`) exactly.
    pub fn parse_usd(text: &str) -> Result<Self, String> {
        let text = text.trim();
        parse_decimal(text, 6).map(MicrosPerMillion).map_err(|e| match e {
            DecimalError::Negative => format!("\"{text}\": a price cannot be negative"),
            DecimalError::TooPrecise => format!(
                "\"{text}\" has more than 6 decimals; prices are exact to a micro-dollar per million tokens"
            ),
            DecimalError::NotANumber => {
                format!("\"{text}\" is not a price in USD per million tokens like 2.50")
            }
        })
    }
}

/// Why a decimal text is not a non-negative fixed-point number (see [`parse_decimal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    Negative,
    TooPrecise,
    NotANumber,
}

/// Reads non-negative decimal text (`"2.50"`, `".5"`, `"10"`) as an integer count of
/// 10^-`decimals` units, exactly: the one decimal reader behind prices, money amounts and
/// ratios, so none of them ever passes through a float.
pub fn parse_decimal(text: &str, decimals: u32) -> Result<i64, DecimalError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(DecimalError::NotANumber);
    }
    if frac.len() > decimals as usize {
        return Err(DecimalError::TooPrecise);
    }
    let digits = |s: &str| -> Result<i64, DecimalError> {
        if s.is_empty() {
            Ok(0)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map_err(|_| DecimalError::NotANumber)
        } else {
            Err(DecimalError::NotANumber)
        }
    };
    let frac_units = digits(frac)? * 10i64.pow(decimals - frac.len() as u32);
    digits(whole)?
        .checked_mul(10i64.pow(decimals))
        .and_then(|w| w.checked_add(frac_units))
        .ok_or(DecimalError::NotANumber)
}

/// The decimal text of a TOML number or string. TOML gives `2.50` as a float; its shortest
/// round-trip text is the decimal the user wrote, which is then parsed exactly. Strings are
/// accepted for the cautious.
pub fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => format!("{f}"),
        Raw::Text(s) => s,
    })
}

impl<'de> Deserialize<'de> for MicrosPerMillion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MicrosPerMillion::parse_usd(&decimal_text(d)?).map_err(serde::de::Error::custom)
    }
}

impl MicrosPerMillion {
    /// The price as exact decimal USD per million tokens, six decimals: `2.500000`.
    pub fn to_usd_string(self) -> String {
        format_fixed(self.0 as i128, 6)
    }

    /// The price for a person to read, by the rule of [`PicoUsd::for_reading`]: `2.50`,
    /// `0.075`.
    pub fn for_reading(self) -> String {
        trimmed_to_cents(&self.to_usd_string())
    }
}

impl fmt::Display for MicrosPerMillion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}/Mtok", self.for_reading())
    }
}

/// Real-time prices of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: MicrosPerMillion,
    pub output: MicrosPerMillion,
    /// Price of prompt tokens read from the provider's cache; the input price when absent.
    #[serde(default)]
    pub cached_input: Option<MicrosPerMillion>,
    /// Price of prompt tokens written to the provider's cache (Anthropic charges 1.25× the
    /// input price for a 5-minute entry, 2× for one hour); the input price when absent, so a
    /// deployment without the figure is never charged less than the provider's base rate.
    #[serde(default)]
    pub cache_write: Option<MicrosPerMillion>,
}

impl Price {
    pub fn cached_input_or_input(&self) -> MicrosPerMillion {
        self.cached_input.unwrap_or(self.input)
    }

    pub fn cache_write_or_input(&self) -> MicrosPerMillion {
        self.cache_write.unwrap_or(self.input)
    }

    /// The exact cost of a call with this usage: each prompt token in exactly one bucket
    /// (cache read, cache write, or plain input), then the output.
    pub fn cost(&self, usage: &Usage) -> PicoUsd {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - written;
        let amount = uncached as i128 * self.input.0 as i128
            + cached as i128 * self.cached_input_or_input().0 as i128
            + written as i128 * self.cache_write_or_input().0 as i128
            + usage.completion_tokens as i128 * self.output.0 as i128;
        PicoUsd(i64::try_from(amount).unwrap_or(i64::MAX))
    }
}

/// An exact amount of money in pico-USD (10⁻¹² USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PicoUsd(pub i64);

impl PicoUsd {
    /// Whole USD with twelve decimals, trailing zeros kept to six: `0.000123` or
    /// `0.0000001875`.
    pub fn to_usd_string(self) -> String {
        let full = format_fixed(self.0 as i128, 12);
        let (whole, frac) = full.split_once('.').expect("twelve decimals");
        let trimmed = frac.trim_end_matches('0');
        let frac = if trimmed.len() < 6 {
            &frac[..6]
        } else {
            trimmed
        };
        format!("{whole}.{frac}")
    }
}

impl PicoUsd {
    /// Parses a decimal USD amount (`"25.00"`, `"0.000001"`) exactly, to the pico-dollar.
    pub fn parse_usd(text: &str) -> Result<PicoUsd, String> {
        let text = text.trim();
        parse_decimal(text, 12).map(PicoUsd).map_err(|e| match e {
            DecimalError::Negative => format!("\"{text}\": an amount cannot be negative"),
            DecimalError::TooPrecise => {
                format!("\"{text}\" has more than 12 decimals; amounts are exact to a pico-dollar")
            }
            DecimalError::NotANumber => format!("\"{text}\" is not an amount in USD like 25.00"),
        })
    }
}

/// Reads a configured USD amount (`limit_usd = "25.00"`, or a TOML number) exactly, for
/// `#[serde(deserialize_with)]`. Not `PicoUsd`'s own `Deserialize`, which reads the integer
/// pico-dollars it serialises to.
pub fn deserialize_usd<'de, D: Deserializer<'de>>(d: D) -> Result<PicoUsd, D::Error> {
    PicoUsd::parse_usd(&decimal_text(d)?).map_err(serde::de::Error::custom)
}

impl std::ops::Add for PicoUsd {
    type Output = PicoUsd;
    fn add(self, rhs: PicoUsd) -> PicoUsd {
        PicoUsd(self.0.saturating_add(rhs.0))
    }
}

impl std::iter::Sum for PicoUsd {
    fn sum<I: Iterator<Item = PicoUsd>>(iter: I) -> PicoUsd {
        iter.fold(PicoUsd(0), |a, b| a + b)
    }
}

/// An amount in a message is written for people: [`PicoUsd::for_people`].
impl fmt::Display for PicoUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.for_people())
    }
}

impl PicoUsd {
    /// The one rule for amounts a person reads (messages, the demo, `sluice bulk status`,
    /// the CLI's tables): exact to the pico-dollar, without padding zeros, and at least to
    /// the cent: `1.50`, `0.0007`, `0.0000234`, `0.00`. A table lines a column's amounts up
    /// by padding each to the longest fraction in it ([`crate::table::Table`]), which keeps
    /// them exact. ([`PicoUsd::to_usd_string`] is the fixed form of the API and files.)
    pub fn for_reading(self) -> String {
        trimmed_to_cents(&format_fixed(self.0 as i128, 12))
    }

    /// [`PicoUsd::for_reading`] with its dollar sign: `$0.0007`.
    pub fn for_people(self) -> String {
        format!("${}", self.for_reading())
    }
}

/// A fixed decimal (`0.000700000000`) without its padding zeros, kept to the cent
/// (`0.0007`, `1.50`).
fn trimmed_to_cents(fixed: &str) -> String {
    let (whole, frac) = fixed.split_once('.').unwrap_or((fixed, "00"));
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 {
        &frac[..2]
    } else {
        trimmed
    };
    format!("{whole}.{frac}")
}

fn format_fixed(value: i128, decimals: u32) -> String {
    let scale = 10i128.pow(decimals);
    let sign = if value < 0 { "-" } else { "" };
    let v = value.abs();
    format!(
        "{sign}{}.{:0width$}",
        v / scale,
        v % scale,
        width = decimals as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: &str, output: &str, cached: Option<&str>) -> Price {
        Price {
            input: MicrosPerMillion::parse_usd(input).unwrap(),
            output: MicrosPerMillion::parse_usd(output).unwrap(),
            cached_input: cached.map(|c| MicrosPerMillion::parse_usd(c).unwrap()),
            cache_write: None,
        }
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(MicrosPerMillion::parse_usd("2.50").unwrap().0, 2_500_000);
        assert_eq!(MicrosPerMillion::parse_usd("0.075").unwrap().0, 75_000);
        assert_eq!(MicrosPerMillion::parse_usd("10").unwrap().0, 10_000_000);
        assert_eq!(MicrosPerMillion::parse_usd(".5").unwrap().0, 500_000);
        assert!(MicrosPerMillion::parse_usd("-1").is_err());
        assert!(MicrosPerMillion::parse_usd("1.1234567").is_err());
        assert!(MicrosPerMillion::parse_usd("abc").is_err());
        assert!(MicrosPerMillion::parse_usd("1e3").is_err());
    }

    #[test]
    fn amounts_parse_exactly_to_the_pico_dollar() {
        assert_eq!(
            PicoUsd::parse_usd("25.00").unwrap(),
            PicoUsd(25_000_000_000_000)
        );
        assert_eq!(PicoUsd::parse_usd("0.000000000001").unwrap(), PicoUsd(1));
        let too_fine = PicoUsd::parse_usd("0.0000000000001").unwrap_err();
        assert!(too_fine.contains("more than 12 decimals"), "{too_fine}");
        let bad = PicoUsd::parse_usd("lots").unwrap_err();
        assert_eq!(bad, "\"lots\" is not an amount in USD like 25.00");
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize_usd")]
            p: PicoUsd,
        }
        let t: T = toml::from_str("p = 0.1").unwrap();
        assert_eq!(t.p, PicoUsd(100_000_000_000));
    }

    #[test]
    fn amounts_are_shown_by_one_rule() {
        let shown = |usd: &str| PicoUsd::parse_usd(usd).unwrap().for_people();
        assert_eq!(shown("0.000700"), "$0.0007");
        assert_eq!(shown("0.0000234"), "$0.0000234");
        assert_eq!(shown("1.5"), "$1.50");
        assert_eq!(shown("0"), "$0.00");
        assert_eq!(shown("0.000000000001"), "$0.000000000001");
        assert_eq!(shown("12.345"), "$12.345");
    }

    #[test]
    fn toml_floats_become_the_decimal_written() {
        #[derive(Deserialize)]
        struct T {
            p: MicrosPerMillion,
        }
        let t: T = toml::from_str("p = 0.15").unwrap();
        assert_eq!(t.p.0, 150_000);
        let t: T = toml::from_str("p = \"1.25\"").unwrap();
        assert_eq!(t.p.0, 1_250_000);
    }

    #[test]
    fn cost_is_exact_and_splits_cached_tokens() {
        // gpt-4o: $2.50 in, $10 out, $1.25 cached. 1,000 prompt tokens of which 400 cached,
        // 200 completion: 600×2.5 + 400×1.25 + 200×10 micro-USD = 4,000 µ$ = $0.004.
        let p = price("2.50", "10.00", Some("1.25"));
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 200,
            cached_tokens: 400,
            cache_write_tokens: 0,
        };
        assert_eq!(p.cost(&usage), PicoUsd(4_000_000_000));
        assert_eq!(p.cost(&usage).to_usd_string(), "0.004000");
    }

    #[test]
    fn sub_micro_amounts_are_not_rounded_away() {
        // 3 tokens at $0.075/M = 0.225 µ$.
        let p = price("0.075", "0", None);
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        assert_eq!(p.cost(&usage), PicoUsd(225_000));
        assert_eq!(p.cost(&usage).to_usd_string(), "0.000000225");
    }

    #[test]
    fn cache_writes_are_charged_at_their_own_price_or_the_input_price() {
        // Claude Sonnet: $3 in, $15 out, cache write $3.75, cache read $0.30. An Anthropic
        // answer of input_tokens 100, cache_creation 1,000, cache_read 2,000, output 50 is
        // normalised to prompt 3,100 (cached 2,000, written 1,000):
        // 100×3 + 1,000×3.75 + 2,000×0.30 + 50×15 = 300 + 3,750 + 600 + 750 = 5,400 µ$.
        let mut p = price("3", "15", Some("0.30"));
        p.cache_write = Some(MicrosPerMillion::parse_usd("3.75").unwrap());
        let usage = Usage {
            prompt_tokens: 3100,
            completion_tokens: 50,
            cached_tokens: 2000,
            cache_write_tokens: 1000,
        };
        assert_eq!(p.cost(&usage), PicoUsd(5_400_000_000));
        // Without a cache-write price the written tokens cost the input price:
        // 100×3 + 1,000×3 + 600 + 750 = 4,650 µ$.
        p.cache_write = None;
        assert_eq!(p.cost(&usage), PicoUsd(4_650_000_000));
        // Inconsistent counts never charge a token twice.
        let odd = Usage {
            prompt_tokens: 10,
            completion_tokens: 0,
            cached_tokens: 8,
            cache_write_tokens: 8,
        };
        assert_eq!(p.cost(&odd), PicoUsd(8 * 300_000 + 2 * 3_000_000));
    }
}

//! Durations written the human way in TOML (`"30s"`, `"5m"`, `"250ms"`), for
//! `#[serde(with = "…")]` on the sections' `Duration` fields.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "\"{text}\" is not a duration like \"30s\" or \"250ms\": {e}"
        ))
    })
}

/// The same for an optional duration (`#[serde(default)]` supplies `None`).
pub mod option {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

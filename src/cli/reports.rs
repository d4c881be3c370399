//! `sluice costs`, `sluice budgets` and `sluice prices`: an operator's listings, read from
//! the configured store (no server or token needed) or the shipped price catalogue.

use anyhow::Context;
use clap::{Args, ValueEnum};
use sluice::config::ResolvedConfig;

#[derive(Args)]
pub struct CostsArgs {
    /// Group by any of model, route, deployment, provider, tier, tenant, user, team, feature,
    /// day (UTC), comma-separated: --by team,day. Totals only when absent.
    #[arg(long, default_value = "")]
    by: String,
    /// From this time: RFC 3339, a UTC date (2026-11-01), or a span back from now (7d, 12h).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive), same forms.
    #[arg(long)]
    until: Option<String>,
    /// Only this tenant's costs.
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, value_enum, default_value_t = sluice::costs::Format::Table)]
    format: sluice::costs::Format,
}

/// How a listing is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Listing {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// `sluice costs`: reads the store directly (an operator's view across tenants, with no API
/// token and no server needed); tenants use `GET /v1/costs`.
pub async fn costs(config: ResolvedConfig, args: CostsArgs) -> anyhow::Result<()> {
    use sluice::costs::ReportQuery;
    let query = ReportQuery::parse(
        args.tenant,
        &args.by,
        args.since.as_deref(),
        args.until.as_deref(),
        chrono::Utc::now(),
    )?;
    let store = sluice::app::open_store(&config)
        .await
        .with_context(|| format!("opening {}", config.server.database))?;
    out!("{}", store.cost_report(query).await?.render(args.format));
    Ok(())
}

/// `sluice budgets`: like `sluice costs`, an operator's view read from the store directly.
pub async fn budgets(
    config: ResolvedConfig,
    tenant: Option<String>,
    format: Listing,
) -> anyhow::Result<()> {
    use sluice::budgets::{view, Budgets};
    let tenants: Vec<&str> = match &tenant {
        Some(name) if config.tenant(name).is_none() => anyhow::bail!("unknown tenant \"{name}\""),
        Some(name) => vec![name.as_str()],
        None => config.tenants.iter().map(|t| t.name.as_str()).collect(),
    };
    let store = sluice::app::open_store(&config)
        .await
        .with_context(|| format!("opening {}", config.server.database))?;
    let views = view::views(&store, &Budgets::from_config(&config), &tenants).await?;
    if format == Listing::Json {
        outln!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        outln!("no budgets configured");
    } else {
        out!("{}", view::to_table(&views));
    }
    Ok(())
}

/// `sluice prices`: the shipped price catalogue.
pub fn prices(format: Listing) -> anyhow::Result<()> {
    let catalogue = sluice::pricing::catalogue::Catalogue::shipped();
    match format {
        Listing::Table => out!("{}", catalogue.to_table()),
        Listing::Json => outln!("{}", serde_json::to_string_pretty(&catalogue.entries)?),
    }
    Ok(())
}

//! The store's operations, called directly, on both backends: each case runs once on a SQLite
//! file and once on a PostgreSQL database of its own (`on_both_stores!`), so both dialects'
//! SQL is held to the same outcomes. One module per area of the store.

mod basics;
mod budgets;
mod bulks;
mod capacity;
mod costs;
mod files;
mod jobs;
mod provider_batches;
mod rows;
mod schedules;

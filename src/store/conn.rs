//! What an operation of the store runs its SQL on: a connection inside a write ([`Conn`]) or
//! the pool reads use ([`Pool`]), each an enum over the two backends, SQLite and PostgreSQL.
//!
//! Why enums and two macros rather than `sqlx::Any` or a trait: an operation is written once,
//! its Rust (guards, outcomes, decoding) shared, and [`with_conn!`] / [`with_pool!`] expand its
//! query once per backend, so each expansion is type-checked against its own driver. SQL text
//! that both dialects read the same (placeholders `$1`, `$2`…) is one constant; where they
//! differ, the two texts sit side by side and the macro's `sql = (sqlite, postgres)` form picks
//! the one for the backend at hand.

use sqlx::{PgConnection, PgPool, SqliteConnection, SqlitePool};

/// The store's backend, for the few decisions outside SQL text that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The `n`-th (from 1) bind parameter of a statement built at run time: `$n` on
    /// Postgres, `?` on SQLite, where a generated statement binds its parameters in the order
    /// they are written. Why not `$n` on both: SQLite's driver finds a numbered parameter by
    /// searching the statement's parameter names at each bind, so a 500-row insert of 7,500
    /// parameters made 28 million searches, a fifth of a busy process's CPU.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => "?".into(),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// The connection an operation of [`super::Store::write`] runs on, inside the write's
/// transaction: the SQLite writer's own connection, or a Postgres transaction's.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// The same connection for a shorter borrow, to hand to a helper and use again after.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl<'c> Conn<'c> {
    /// The SQLite connection, for the parts of Sluice that exist only on SQLite (the embedded
    /// queue, which `check-config` refuses beside Postgres); an error on Postgres.
    pub fn into_sqlite(self, what: &'static str) -> Result<&'c mut SqliteConnection, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => Ok(c),
            Conn::Postgres(_) => Err(sqlx::Error::Configuration(
                format!("{what} needs the SQLite store").into(),
            )),
        }
    }
}

/// The pool reads run on.
#[derive(Clone, Copy)]
pub enum Pool<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl Pool<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's connection (`&mut SqliteConnection` or
/// `&mut PgConnection`): `$body` is expanded once per backend, so one query written once is
/// checked against both drivers. `$conn` is a [`Conn`] or a `&mut Conn`, usable again after.
/// The `sql = (sqlite, postgres)` form also binds `sql` to the text of the backend at hand.
///
/// `$body` must have one type on both backends: end it with what the caller needs
/// (`rows_affected()`, a tuple, a `FromRow` struct), not a driver's own result type.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn.reborrow() {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Postgres($c) => $body,
        }
    };
    ($conn:expr, $c:ident, $sql:ident = ($sqlite:expr, $postgres:expr) => $body:expr) => {
        match $conn.reborrow() {
            $crate::store::Conn::Sqlite($c) => {
                let $sql = $sqlite;
                $body
            }
            $crate::store::Conn::Postgres($c) => {
                let $sql = $postgres;
                $body
            }
        }
    };
}

/// [`with_conn!`] for reads: `$c` is the backend's pool (`&SqlitePool` or `&PgPool`).
#[macro_export]
macro_rules! with_pool {
    ($pool:expr, $c:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($c) => $body,
            $crate::store::Pool::Postgres($c) => $body,
        }
    };
    ($pool:expr, $c:ident, $sql:ident = ($sqlite:expr, $postgres:expr) => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($c) => {
                let $sql = $sqlite;
                $body
            }
            $crate::store::Pool::Postgres($c) => {
                let $sql = $postgres;
                $body
            }
        }
    };
}

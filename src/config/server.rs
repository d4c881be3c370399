//! `[server]` (the API's address, the database, where uploaded files' bytes go) and
//! `[scheduler]` (recurring jobs), with their problems.
//!
//! `database` is read into a [`Database`] as the file is read: a SQLite file's path or a
//! PostgreSQL server's URL, whose password no `Display`, `Debug` or error ever shows.
//! `files` and `database` together resolve to a [`FileBytes`], once.

use super::queue::{QueueBackend, QueueConfig};
use super::{Problem, Secret};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Recurring jobs (see [`crate::schedule`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Whether `sluice serve` fires recurring jobs. Run it in one process per deployment; a
    /// second one is harmless (each due time still makes one job) but useless.
    pub enabled: bool,
    /// The folder of `*.toml` definitions.
    pub dir: PathBuf,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            dir: "jobs".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// Where jobs, results and costs are recorded: a SQLite file (and the embedded queue),
    /// or a PostgreSQL server.
    pub database: Database,
    /// A folder for uploaded files' bytes (`/v1/files`); when unset, `<database>.files`
    /// beside a SQLite file, and in the store itself with PostgreSQL (see [`FileBytes`]).
    pub files: Option<PathBuf>,
    /// The most connections this process keeps to a PostgreSQL store (ignored with SQLite,
    /// whose one writer and few readers are fixed). Every process of a cluster holds up to
    /// this many, so their sum must stay under the server's `max_connections`.
    pub database_connections: u32,
}

/// `[server] database_connections` when unset: enough for a worker process's concurrent
/// writes and an API's long polls, few enough that six processes share a server's default
/// `max_connections` of 100.
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 16;

/// Where uploaded files' bytes are kept: what `[server] files` and `database` resolve to
/// ([`ServerConfig::file_bytes`]). Their index (name, size, tenant) is always in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileBytes {
    /// A folder, one file per upload: the default beside a SQLite file (one process, one
    /// machine). Beside a PostgreSQL store, only for a folder every process shares (a
    /// network file system mounted at the same path everywhere), since any API process may
    /// read a batch's input file.
    Folder(PathBuf),
    /// In the store, in chunks (`file_chunks`): the default with PostgreSQL, so every process
    /// on every machine reads what any one of them took.
    Store,
}

/// Where the store lives: `[server] database`, written as a file's path or a URL.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Database {
    /// A SQLite file, relative to the config file's folder (the default, `sluice.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres(PostgresUrl),
}

/// Why the text of `server.database` names no database. Never quotes the text, which may
/// hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    #[error("must not be empty: write a SQLite file's path or a postgres:// URL")]
    Empty,
    #[error("write the SQLite file's path itself, without `{0}://`")]
    SqliteUrl(String),
    #[error("unknown scheme `{0}://`: write a SQLite file's path or a postgres:// URL")]
    UnknownScheme(String),
    #[error("is not a valid postgres:// URL ({0})")]
    BadUrl(url::ParseError),
}

impl Database {
    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }

    /// The SQLite file, to make relative to the config file's folder.
    pub(super) fn sqlite_path_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl TryFrom<String> for Database {
    type Error = DatabaseError;

    /// A URL is text starting with a scheme and `://`; anything else is a file's path.
    fn try_from(text: String) -> Result<Self, DatabaseError> {
        if text.is_empty() {
            return Err(DatabaseError::Empty);
        }
        let Some(scheme) = url_scheme(&text) else {
            return Ok(Database::Sqlite(text.into()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => PostgresUrl::parse(text).map(Database::Postgres),
            "sqlite" | "file" => Err(DatabaseError::SqliteUrl(scheme.to_string())),
            _ => Err(DatabaseError::UnknownScheme(scheme.to_string())),
        }
    }
}

/// The scheme of `text` when it starts like a URL (`scheme://`, RFC 3986's scheme
/// characters).
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .then_some(scheme)
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        Database::Sqlite(path.to_owned())
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// A PostgreSQL server's URL. `Display` and `Debug` show it with its password (in the user
/// part, or a `password=` parameter) replaced by `***`; only [`PostgresUrl::expose`] gives
/// the whole URL, for the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: Secret,
    redacted: String,
}

impl PostgresUrl {
    /// Reads a `postgres://` or `postgresql://` URL (the caller checked the scheme).
    fn parse(text: String) -> Result<PostgresUrl, DatabaseError> {
        let url = url::Url::parse(&text).map_err(DatabaseError::BadUrl)?;
        Ok(PostgresUrl {
            url: Secret::new(text),
            redacted: super::secret::redacted(url),
        })
    }

    /// The URL with its `${VAR}` references replaced by `expand`'s answer (see
    /// [`super::secret`]), read again; `expand` and the reading never quote the text.
    pub(super) fn expanded(
        &self,
        expand: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<PostgresUrl, String> {
        let text = expand(self.url.expose())?;
        text.parse().map_err(|e: DatabaseError| e.to_string())
    }

    /// The whole URL, password included: for the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }
}

impl std::str::FromStr for PostgresUrl {
    type Err = DatabaseError;

    /// Reads a `postgres://` or `postgresql://` URL; any other text is refused.
    fn from_str(text: &str) -> Result<Self, DatabaseError> {
        match url_scheme(text).map(str::to_ascii_lowercase).as_deref() {
            Some("postgres" | "postgresql") => PostgresUrl::parse(text.to_string()),
            Some(scheme) => Err(DatabaseError::UnknownScheme(scheme.to_string())),
            None => Err(DatabaseError::UnknownScheme(String::new())),
        }
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted)
    }
}

impl ServerConfig {
    /// The base URL a client on this machine reaches the API at: `listen`, with an address
    /// that listens on every interface (`0.0.0.0`, `[::]`) replaced by the loopback one.
    pub fn client_url(&self) -> String {
        let (host, port) = self
            .listen
            .rsplit_once(':')
            .unwrap_or((self.listen.as_str(), "8080"));
        let host = match host {
            "0.0.0.0" | "" => "127.0.0.1",
            "[::]" => "[::1]",
            host => host,
        };
        format!("http://{host}:{port}")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            database: Database::Sqlite("sluice.db".into()),
            files: None,
            database_connections: DEFAULT_DATABASE_CONNECTIONS,
        }
    }
}

impl ServerConfig {
    /// Where uploaded files' bytes go (see [`ServerConfig::files`]): a folder named by the
    /// file always; otherwise beside a SQLite file, or in a PostgreSQL store. A folder is
    /// relative to the current directory until [`super::Config::resolve_paths`] made it the
    /// config folder's.
    pub fn file_bytes(&self) -> FileBytes {
        match (&self.files, &self.database) {
            (Some(folder), _) => FileBytes::Folder(folder.clone()),
            (None, Database::Sqlite(path)) => FileBytes::Folder(path.with_extension("files")),
            (None, Database::Postgres(_)) => FileBytes::Store,
        }
    }

    /// The store against the queue: the embedded queue is a table of the SQLite store, so a
    /// PostgreSQL store needs RabbitMQ.
    pub(super) fn database_problems(&self, queue: &QueueConfig) -> Vec<Problem> {
        match (&self.database, queue.effective_backend()) {
            (Database::Postgres(_), QueueBackend::Embedded) => vec![Problem::new(
                "server.database",
                "a PostgreSQL store needs the rabbitmq queue backend (set queue.url): the embedded queue is a table of a SQLite store",
            )],
            _ => Vec::new(),
        }
    }

    /// `[server]`'s own problems.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.database_connections == 0 {
            problems.push(Problem::new(
                "server.database_connections",
                "must be at least 1: every write and read needs a connection",
            ));
        }
        problems.extend(self.listen_problems());
        problems
    }

    /// `listen` is checked as `serve` will bind it: a host name is resolved.
    fn listen_problems(&self) -> Vec<Problem> {
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(self.listen.as_str())
            .map(|mut addresses| addresses.next());
        if matches!(resolved, Ok(Some(_))) {
            return Vec::new();
        }
        vec![Problem::new(
            "server.listen",
            format!(
                "\"{}\" is not an address like 127.0.0.1:8080 or localhost:8080{}",
                self.listen,
                match resolved {
                    Err(e) => format!(" ({e})"),
                    Ok(_) => " (the name resolves to no address)".into(),
                }
            ),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;

    const PASSWORD: &str = "pg-SECRET-word";

    /// Every problem of `[server]` and `[queue]` written as `text`, as check-config lists them.
    fn problems_of(text: &str) -> Vec<String> {
        match Config::from_toml(text, "t.toml", &|_| None) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(err) => panic!("{err}"),
        }
    }

    fn database(text: &str) -> Result<Database, DatabaseError> {
        Database::try_from(text.to_string())
    }

    #[test]
    fn a_path_is_a_sqlite_file_and_the_default_is_sluice_db() {
        assert_eq!(
            ServerConfig::default().database.sqlite_path(),
            Some(Path::new("sluice.db"))
        );
        for path in [
            "data/s.db",
            "/var/lib/sluice/s.db",
            "C:\\sluice\\s.db",
            "a:b.db",
        ] {
            assert_eq!(database(path).unwrap().sqlite_path(), Some(Path::new(path)));
        }
    }

    #[test]
    fn a_postgres_url_never_shows_its_password() {
        for (text, shown) in [
            (
                format!("postgres://sluice:{PASSWORD}@db.internal:5432/sluice"),
                "postgres://sluice:***@db.internal:5432/sluice",
            ),
            (
                format!("postgresql://sluice@localhost/sluice?sslmode=require&password={PASSWORD}"),
                "postgresql://sluice@localhost/sluice?sslmode=require&password=***",
            ),
            (
                "postgres://localhost/sluice".to_string(),
                "postgres://localhost/sluice",
            ),
            (
                "postgres:///sluice?host=/var/run/postgresql".to_string(),
                "postgres:///sluice?host=/var/run/postgresql",
            ),
        ] {
            let parsed = database(&text).unwrap();
            let Database::Postgres(url) = &parsed else {
                panic!("{parsed} is not a postgres URL")
            };
            assert_eq!(url.expose(), text);
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(
                format!("{parsed:?}"),
                format!("Postgres(PostgresUrl({shown}))")
            );
            let config = Config::parse(
                &format!("[server]\ndatabase = \"{text}\"\n"),
                "t.toml",
                &|_| None,
            )
            .unwrap();
            assert!(!format!("{config:?}").contains(PASSWORD));
        }
    }

    #[test]
    fn check_config_names_a_database_it_cannot_use_without_its_password() {
        for (database, expected) in [
            (
                format!("mysql://root:{PASSWORD}@localhost/sluice"),
                "server.database: unknown scheme `mysql://`: write a SQLite file's path or a postgres:// URL",
            ),
            (
                "sqlite://data/sluice.db".to_string(),
                "server.database: write the SQLite file's path itself, without `sqlite://`",
            ),
            (
                format!("postgres://sluice:{PASSWORD}@/sluice"),
                "server.database: is not a valid postgres:// URL (empty host)",
            ),
            (
                format!("postgres://sluice:{PASSWORD}@db:port/sluice"),
                "server.database: is not a valid postgres:// URL (invalid port number)",
            ),
            (
                String::new(),
                "server.database: must not be empty: write a SQLite file's path or a postgres:// URL",
            ),
        ] {
            let problems = problems_of(&format!("[server]\ndatabase = \"{database}\"\n"));
            assert_eq!(problems, [expected], "{database}");
        }
    }

    #[test]
    fn a_postgres_store_needs_the_rabbitmq_queue() {
        let text = format!("[server]\ndatabase = \"postgres://sluice:{PASSWORD}@db/sluice\"\n");
        assert_eq!(
            problems_of(&text),
            ["server.database: a PostgreSQL store needs the rabbitmq queue backend (set queue.url): the embedded queue is a table of a SQLite store"]
        );
        let with_rabbitmq = text + "[queue]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n";
        assert_eq!(problems_of(&with_rabbitmq), Vec::<String>::new());
    }

    #[test]
    fn a_url_is_not_taken_as_a_path_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("postgres://sluice:{PASSWORD}@db/sluice");
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            format!(
                "[server]\ndatabase = \"{url}\"\n[queue]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n"
            ),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        let Database::Postgres(loaded) = &config.server.database else {
            panic!("{} is not a postgres URL", config.server.database)
        };
        assert_eq!(loaded.expose(), url);
    }
}

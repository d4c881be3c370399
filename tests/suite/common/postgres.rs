//! A PostgreSQL database of a test's own, on the server `SLUICE_TEST_POSTGRES` names
//! (`scripts/test.sh` starts one and sets it): created with a unique name, so tests run side
//! by side, and dropped when the test ends, unless `SLUICE_TEST_KEEP_POSTGRES` is set, which
//! leaves it to look at (its name is printed).

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

/// The variable naming the server: a role that may create databases.
pub const SERVER_VAR: &str = "SLUICE_TEST_POSTGRES";
/// Set (to anything) to keep each test's database after the test.
pub const KEEP_VAR: &str = "SLUICE_TEST_KEEP_POSTGRES";

/// The server's URL from [`SERVER_VAR`]; a panic saying how to get one when it is unset.
pub fn server_url() -> String {
    std::env::var(SERVER_VAR).unwrap_or_else(|_| {
        panic!(
            "{SERVER_VAR} is not set: this test needs a PostgreSQL server. Run the tests through \
             scripts/test.sh (it installs and starts PostgreSQL and sets {SERVER_VAR}), or run \
             `export $(bash scripts/postgres.sh)` first, or set it to \
             postgres://USER:PASSWORD@HOST:PORT/DB for a role that may create databases"
        )
    })
}

/// A database of one test's own, dropped with it (see the module's doc).
pub struct TestDatabase {
    /// Its name, `sluice_test_` and 32 hex digits.
    pub name: String,
    /// The URL of the database, password included.
    pub url: String,
    server: PgConnectOptions,
}

impl TestDatabase {
    /// Creates an empty database on the server of [`SERVER_VAR`].
    pub async fn create() -> TestDatabase {
        let server_url = server_url();
        let server = PgConnectOptions::from_str(&server_url)
            .unwrap_or_else(|e| panic!("{SERVER_VAR} is not a PostgreSQL URL: {e}"));
        let name = format!("sluice_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = connect(&server).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        admin.close().await.ok();
        let mut url = url::Url::parse(&server_url).expect("a URL sqlx reads is a URL");
        url.set_path(&name);
        TestDatabase {
            url: url.to_string(),
            name,
            server,
        }
    }

    /// Connection options for the database.
    pub fn options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// One connection to the database.
    pub async fn connect(&self) -> PgConnection {
        connect(&self.options()).await
    }
}

async fn connect(options: &PgConnectOptions) -> PgConnection {
    options.connect().await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to the PostgreSQL server of {SERVER_VAR} ({}:{}): {e}",
            options.get_host(),
            options.get_port()
        )
    })
}

impl Drop for TestDatabase {
    /// Drops the database (closing what is still connected to it), on a thread of its own:
    /// `Drop` cannot wait on the test's runtime.
    fn drop(&mut self) {
        if std::env::var_os(KEEP_VAR).is_some() {
            eprintln!("kept the test database {} ({KEEP_VAR} is set)", self.name);
            return;
        }
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database on");
            runtime.block_on(async move {
                let mut admin = server.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
    }
}

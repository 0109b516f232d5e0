//! The PostgreSQL server the tests use: the one `scripts/test` starts (a throw-away
//! cluster under `target/`, see `scripts/postgres`) and names in `WEIR_TEST_POSTGRES`,
//! a URL whose user may create databases. Every test gets a database of its own.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's URL, without a database name.
pub fn server_url() -> String {
    std::env::var("WEIR_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "WEIR_TEST_POSTGRES is not set: run the tests with scripts/test, which starts a \
             PostgreSQL server for them, or start one with `scripts/postgres start` and export \
             the URL it prints"
        )
    })
}

/// The URL of `database` on the test server.
pub fn database_url(database: &str) -> String {
    let server = server_url();
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (server.clone(), String::new()),
    };
    format!("{}/{database}{query}", base.trim_end_matches('/'))
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "weir_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) =
        tokio_postgres::connect(&database_url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL server accepts connections");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a test database is created");
    drop(client);
    let _ = driver.await;
    database_url(&name)
}

//! weir's integration tests: one binary, real plugins built from `plugins/`, the real
//! host, and a real store per test: SQLite, or a database of its own on the PostgreSQL
//! server the test command starts.

/// Runs each test (an `async fn(Backend)`) on both store backends, as `NAME::sqlite` and
/// `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(weir_tests::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(weir_tests::Backend::Postgres).await
                }
            }
        )*
    };
}

mod caching;
mod chaos;
mod cli;
mod command;
mod fairness;
mod flows;
mod grants;
mod hostile;
mod http;
mod lifecycle;
mod limits;
mod loading;
mod polyglot;
mod projects;
mod queue;
mod repo_info;
mod runs;
mod sandbox;
mod server;
mod shared_store;
mod store;
mod store_failures;
mod tenancy;
mod ui;
mod workers;

//! weir's integration tests: one binary, real plugins built from `plugins/`, the real
//! host and a real SQLite store per test.

mod caching;
mod chaos;
mod cli;
mod command;
mod flows;
mod grants;
mod hostile;
mod http;
mod lifecycle;
mod limits;
mod loading;
mod polyglot;
mod projects;
mod repo_info;
mod runs;
mod sandbox;
mod shared_store;
mod store;
mod store_failures;

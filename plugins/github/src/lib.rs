//! The tasks of `examples/repo-info`, Prefect's tutorial flow in weir: fetch a
//! repository from the GitHub API, page through its open issues, summarize.

use serde_json::{Value, json};

/// Fetches a URL and returns its JSON. A 5xx answer is retried; any other error status
/// is fatal. Results are cached by URL for an hour.
#[weir::task(
    retries = 3,
    retry_delay = "200ms",
    cache = "inputs",
    cache_expiration = "1h",
    needs = ["http"]
)]
fn get_url(url: String) -> weir::Result<Value> {
    let response = weir::http::get(&url)?;
    match response.status {
        200..=299 => response.json(),
        500..=599 => Err(weir::TaskError::retriable(format!(
            "{url} answered {}",
            response.status
        ))),
        status => Err(weir::TaskError::fatal(format!(
            "{url} answered {status}: {}",
            response.text().chars().take(200).collect::<String>()
        ))),
    }
}

/// The URLs of the pages listing a repository's open issues.
#[weir::task]
fn issue_pages(
    api: String,
    owner: String,
    repo: String,
    open_issues: u64,
    per_page: Option<u64>,
) -> Vec<String> {
    let per_page = per_page.unwrap_or(30).max(1);
    let pages = open_issues.div_ceil(per_page);
    weir::info!("{open_issues} open issues: {pages} pages of {per_page}");
    (1..=pages)
        .map(|page| format!("{api}/repos/{owner}/{repo}/issues?page={page}&per_page={per_page}"))
        .collect()
}

/// Logs and returns a repository's stars, forks and open issues.
#[weir::task]
fn summarize(repo: Value, issues: Vec<Vec<Value>>) -> Value {
    let name = repo["full_name"].as_str().unwrap_or("the repository");
    let stars = repo["stargazers_count"].as_u64().unwrap_or(0);
    let forks = repo["forks_count"].as_u64().unwrap_or(0);
    let open = repo["open_issues_count"].as_u64().unwrap_or(0);
    let fetched: usize = issues.iter().map(Vec::len).sum();
    weir::info!("{name} repository statistics 🤓:");
    weir::info!("Stars 🌠 : {stars}");
    weir::info!("Forks 🍴 : {forks}");
    weir::info!("Open issues 🐛 : {open} ({fetched} fetched)");
    json!({"repository": name, "stars": stars, "forks": forks, "open_issues": open, "issues_fetched": fetched})
}

weir::export!(get_url, issue_pages, summarize);

//! `crewq serve`: Prometheus metrics and a live web dashboard for a running
//! crew, from one process that reads (and, on an operator's click, replays
//! or purges) its streams.
//!
//! - `/metrics`: the Prometheus text format, rendered by
//!   `metrics-exporter-prometheus` (metrics.rs): gauges read from
//!   [`Monitor`](crewq_core::monitor::Monitor) on every scrape, and whatever
//!   crewq counters and histograms this process records (its replays).
//!   Not the workers' handler-duration and queue-wait histograms, nor their
//!   counters: `metrics` records into the recorder of the process the code
//!   runs in, and no worker runs here. Each worker process exports its own,
//!   as `core/examples/prometheus.rs` shows, and Prometheus scrapes both.
//! - `/`: the dashboard, plain HTML, JS and CSS compiled into the binary
//!   (assets/), that polls `/api/stats` every 2 s; the JSON API (api.rs)
//!   also lists, inspects, replays and purges dead letters and looks tasks
//!   up.
//!
//! It binds loopback by default: the API changes the crew's streams and
//! asks for no credentials.

mod api;
mod metrics;

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crewq_core::{AgentType, Keyspace};
use crewq_redis::RedisBroker;

use crate::out::{emit, json_line};
use crate::target::{Target, agent_types};

/// `crewq serve`'s options.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The agent types to show (the broker cannot list keys, so name them).
    #[arg(required = true, value_name = "AGENT")]
    pub agents: Vec<String>,
    /// The address to serve on. The API replays and purges dead letters
    /// without asking who calls: keep it on loopback unless something in
    /// front of it checks.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
}

/// What every request handler shares.
pub struct App {
    pub broker: RedisBroker,
    pub keyspace: Keyspace,
    pub agents: Vec<AgentType>,
    pub prometheus: metrics::Exporter,
}

/// Serves until interrupted (Ctrl-C).
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    let agents = agent_types(&args.agents)?;
    // Installed before anything records: the recorder is process-wide.
    let prometheus = metrics::Exporter::install()?;
    let (broker, keyspace) = args.target.open().await?;
    let app = Arc::new(App {
        broker,
        keyspace,
        agents,
        prometheus,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr()?;
    // The first line says where (`--listen 127.0.0.1:0` picks a free port).
    let started = if args.target.json {
        json_line(&serde_json::json!({
            "listen": local.to_string(),
            "dashboard": format!("http://{local}/"),
            "metrics": format!("http://{local}/metrics"),
        }))?
    } else {
        format!("crewq serve: dashboard on http://{local}/, metrics on http://{local}/metrics\n")
    };
    emit(&started)?;
    let loopback = local.ip().is_loopback();
    let router = router(app).layer(middleware::from_fn(move |request, next| {
        only_local_hosts(loopback, request, next)
    }));
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            // No signal handler (an unusual platform): serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await?;
    Ok(())
}

/// Every route: the assets, `/metrics`, the JSON API.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        // Browsers ask for one; there is none (and no 404 in their console).
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/metrics", get(metrics::scrape))
        .route("/api/stats", get(api::stats))
        .route("/api/dlq", get(api::dead_letters))
        .route("/api/dlq/{agent}/{id}", get(api::dead_letter))
        .route("/api/dlq/replay", post(api::replay))
        .route("/api/dlq/purge", post(api::purge))
        .route("/api/task", get(api::task))
        .with_state(app)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// On a loopback address, answers only requests that name a loopback host:
/// a web page elsewhere that re-points its own name at 127.0.0.1 (DNS
/// rebinding) must not reach the replay and purge endpoints. (A plain
/// cross-site form post is refused already: the API takes
/// `application/json` only, which a browser sends cross-site only after a
/// CORS preflight this server never allows.)
async fn only_local_hosts(loopback: bool, request: Request, next: Next) -> Response {
    if loopback {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "crewq serve answers loopback hosts only\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Whether a Host header names a loopback host (with or without a port).
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_host_names_pass() {
        for host in [
            "127.0.0.1:9464",
            "localhost:80",
            "LOCALHOST",
            "[::1]:9464",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:9464",
            "10.0.0.1:9464",
            "[fe80::1]:1",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}

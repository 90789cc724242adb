//! The dashboard's JSON API, on core's [`Monitor`], [`DeadLetters`] and
//! [`Locator`], as `crewq stats`, `crewq dlq` and `crewq task` use them.
//!
//! - `GET /api/stats`: per agent type, [`Monitor`]'s numbers (what `crewq
//!   stats --json` prints) with their sums over groups (`summary`, what
//!   `/metrics` exports);
//! - `GET /api/dlq?agent=A&reason=R&trace=T&limit=N`: dead letters, oldest
//!   first (every served agent type by default, at most 100);
//! - `GET /api/dlq/{agent}/{id}`: one dead letter;
//! - `POST /api/dlq/replay` and `POST /api/dlq/purge`, body
//!   `{"agent": A, "id": ID}`: replays (one atomic step, as `crewq dlq
//!   replay`) or deletes one dead letter;
//! - `GET /api/task?id=X[&trace=true]`: where a task (or every task of a
//!   trace) is, in the served agent types' streams.
//!
//! Errors answer `{"error": "..."}` with a 4xx or 5xx status.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crewq_core::dlq::{DeadLetters, DlqError, DlqFilter};
use crewq_core::locate::{Locator, Sighting, Wanted};
use crewq_core::monitor::{AgentStats, Monitor};
use crewq_core::{AgentType, Broker, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::metrics::Numbers;
use crate::dlq::view::LetterView;

/// How many dead letters a listing returns unless asked for fewer.
const DEFAULT_LIMIT: usize = 100;

/// An error as the API answers it.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crewq_core::Error> for ApiError {
    fn from(err: crewq_core::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
    }
}

impl From<DlqError> for ApiError {
    fn from(err: DlqError) -> Self {
        let status = match &err {
            DlqError::NotFound { .. } => StatusCode::NOT_FOUND,
            DlqError::NotReplayable { .. } | DlqError::Decode { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, err.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn agent_type(name: &str) -> Result<AgentType, ApiError> {
    AgentType::new(name).map_err(|e| bad_request(e.to_string()))
}

fn entry_id(text: &str) -> Result<StreamId, ApiError> {
    text.parse()
        .map_err(|_| bad_request(format!("'{text}' is not a stream entry id")))
}

/// One agent type in `/api/stats`.
#[derive(Serialize)]
pub struct AgentView {
    #[serde(flatten)]
    stats: AgentStats,
    summary: Numbers,
}

/// `GET /api/stats`.
pub async fn stats(State(app): State<Arc<App>>) -> ApiResult<Vec<AgentView>> {
    let stats = Monitor::new(&app.broker, app.keyspace.clone())
        .stats(&app.agents)
        .await?;
    let views = stats
        .into_iter()
        .map(|stats| AgentView {
            summary: Numbers::of(&stats),
            stats,
        })
        .collect();
    Ok(Json(views))
}

/// `/api/dlq`'s query.
#[derive(Deserialize)]
pub struct DlqQuery {
    agent: Option<String>,
    reason: Option<String>,
    trace: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/dlq`.
pub async fn dead_letters(
    State(app): State<Arc<App>>,
    Query(query): Query<DlqQuery>,
) -> ApiResult<Vec<LetterView>> {
    let agents = match &query.agent {
        Some(name) => vec![agent_type(name)?],
        None => app.agents.clone(),
    };
    let mut filter = DlqFilter::new(agents).limit(query.limit.unwrap_or(DEFAULT_LIMIT));
    filter.reason = query.reason.filter(|r| !r.is_empty());
    filter.trace_id = query.trace.filter(|t| !t.is_empty());
    let listed = letters(&app).list(&filter).await?;
    Ok(Json(listed.iter().map(LetterView::from).collect()))
}

/// `GET /api/dlq/{agent}/{id}`.
pub async fn dead_letter(
    State(app): State<Arc<App>>,
    Path((agent, id)): Path<(String, String)>,
) -> ApiResult<LetterView> {
    let (agent, id) = (agent_type(&agent)?, entry_id(&id)?);
    match letters(&app).inspect(&agent, id).await? {
        Some(entry) => Ok(Json(LetterView::from(&entry))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id} for agent type {agent}"),
        )),
    }
}

/// The body of replay and purge: one dead letter.
#[derive(Deserialize)]
pub struct OneLetter {
    agent: String,
    id: String,
}

/// `POST /api/dlq/replay`.
pub async fn replay(State(app): State<Arc<App>>, Json(one): Json<OneLetter>) -> ApiResult<Value> {
    let (agent, id) = (agent_type(&one.agent)?, entry_id(&one.id)?);
    let replayed = letters(&app).replay(&agent, id).await?;
    Ok(Json(json!({
        "agent_type": agent.as_str(),
        "entry_id": id.to_string(),
        "task_id": replayed.task_id,
        "new_entry_id": replayed.new_entry_id.to_string(),
    })))
}

/// `POST /api/dlq/purge`.
pub async fn purge(State(app): State<Arc<App>>, Json(one): Json<OneLetter>) -> ApiResult<Value> {
    let (agent, id) = (agent_type(&one.agent)?, entry_id(&one.id)?);
    let deleted = app.broker.xdel(&app.keyspace.dlq(&agent), &[id]).await?;
    if deleted == 0 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id} for agent type {agent}"),
        ));
    }
    Ok(Json(json!({ "purged": deleted })))
}

/// `/api/task`'s query.
#[derive(Deserialize)]
pub struct TaskQuery {
    id: String,
    #[serde(default)]
    trace: bool,
}

/// `GET /api/task`.
pub async fn task(
    State(app): State<Arc<App>>,
    Query(query): Query<TaskQuery>,
) -> ApiResult<Vec<Sighting>> {
    if query.id.is_empty() {
        return Err(bad_request(
            "give a task id (or a trace id with trace=true)",
        ));
    }
    let wanted = if query.trace {
        Wanted::TraceId(query.id)
    } else {
        Wanted::TaskId(query.id)
    };
    let found = Locator::new(&app.broker, app.keyspace.clone())
        .find(&app.agents, &wanted)
        .await?;
    Ok(Json(found))
}

fn letters(app: &App) -> DeadLetters<&crewq_redis::RedisBroker> {
    DeadLetters::new(&app.broker, app.keyspace.clone())
}

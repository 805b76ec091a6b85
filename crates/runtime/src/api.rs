//! The Runtime API one instance talks to (`shared/spec/runtime-api.md` §3): its own listener,
//! so an instance can only see and answer its own invocations.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rampart_model::MAX_RESPONSE_BYTES;

use crate::instance::{Phase, Reply, Shared, Status};

const BASE: &str = "/2018-06-01";

/// The router of one instance's Runtime API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("{BASE}/runtime/invocation/next"), get(next))
        .route(
            &format!("{BASE}/runtime/invocation/{{id}}/response"),
            post(response),
        )
        .route(
            &format!("{BASE}/runtime/invocation/{{id}}/error"),
            post(error),
        )
        .route(&format!("{BASE}/runtime/init/error"), post(init_error))
        .route(&format!("{BASE}/ping"), get(|| async { "pong" }))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "this Runtime API endpoint is not implemented",
            )
        })
        .with_state(shared)
}

/// A Runtime API error: `{"errorType", "errorMessage"}` with its status (runtime-api.md §3.3).
struct RapiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl IntoResponse for RapiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errorType": self.error_type, "errorMessage": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn api_error(status: StatusCode, error_type: &'static str, message: &str) -> RapiError {
    RapiError {
        status,
        error_type,
        message: message.to_owned(),
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

fn invalid_state(message: &str) -> RapiError {
    api_error(StatusCode::FORBIDDEN, "InvalidStateTransition", message)
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut phase = shared.phase.lock().expect("phase lock");
        if matches!(&*phase, Phase::Busy { reply: Some(_), .. }) {
            return invalid_state("an invocation is outstanding: post its response or error first")
                .into_response();
        }
        *phase = Phase::Waiting;
    }
    shared.status.send_if_modified(|s| {
        let first = matches!(s, Status::Starting);
        if first {
            *s = Status::Ready;
        }
        first
    });
    let event = {
        let mut events = shared.events.lock().await;
        events.recv().await
    };
    let Some(event) = event else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "the instance is shutting down",
        )
        .into_response();
    };
    let mut response = Response::new(Body::from(event.payload));
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &event.request_id);
    put("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &event.invoked_arn);
    put("lambda-runtime-trace-id", &event.trace_id);
    if let Some(cc) = &event.client_context {
        put("lambda-runtime-client-context", cc);
    }
    put("content-type", "application/json");
    shared.begin(event.request_id, event.reply);
    response
}

/// Why a body could not be read.
enum BodyError {
    TooLarge(RapiError),
    Truncated(RapiError),
}

impl BodyError {
    /// What the waiting caller gets instead of the response.
    fn reply(&self) -> Reply {
        match self {
            Self::TooLarge(_) => Reply::TooLarge,
            Self::Truncated(_) => Reply::Truncated,
        }
    }

    fn into_response(self) -> Response {
        match self {
            Self::TooLarge(e) | Self::Truncated(e) => e.into_response(),
        }
    }
}

/// A body read whole, with the trailers a streaming response may end with.
struct ReadBody {
    bytes: Bytes,
    trailers: Option<HeaderMap>,
}

/// Reads a response or error body, refusing one over the limit.
async fn read_body(body: Body) -> Result<ReadBody, BodyError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(ReadBody {
            trailers: collected.trailers().cloned(),
            bytes: collected.to_bytes(),
        }),
        Err(source) => {
            if source
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge(api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    &format!("the body exceeds the maximum of {MAX_RESPONSE_BYTES} bytes"),
                )))
            } else {
                Err(BodyError::Truncated(api_error(
                    StatusCode::BAD_REQUEST,
                    "TruncatedHTTPRequest",
                    &format!("the body could not be read whole: {source}"),
                )))
            }
        }
    }
}

/// Checks `id` against the outstanding invocation; on success takes its reply channel.
fn take_reply(shared: &Shared, id: &str) -> Result<tokio::sync::oneshot::Sender<Reply>, RapiError> {
    let mut phase = shared.phase.lock().expect("phase lock");
    match &mut *phase {
        Phase::Busy { request_id, reply } if request_id == id => reply
            .take()
            .ok_or_else(|| invalid_state("this invocation was already answered")),
        Phase::Init => Err(invalid_state("no invocation has been delivered yet")),
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("request id {id} is not the outstanding invocation"),
        )),
    }
}

/// Checks `id`, reads the body, and hands the caller what `reply_with` makes of it.
async fn answer(
    shared: &Shared,
    id: &str,
    body: Body,
    reply_with: impl FnOnce(ReadBody) -> Reply,
) -> Response {
    let reply = match take_reply(shared, id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match read_body(body).await {
        Ok(body) => {
            let _ = reply.send(reply_with(body));
            accepted()
        }
        Err(e) => {
            let _ = reply.send(e.reply());
            e.into_response()
        }
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(mode) = headers.get("lambda-runtime-function-response-mode")
        && mode != "streaming"
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidFunctionResponseMode",
            "Lambda-Runtime-Function-Response-Mode must be 'streaming' when present",
        )
        .into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    answer(&shared, &id, body, |body| {
        streamed_error(&body).unwrap_or(Reply::Response {
            body: body.bytes,
            content_type,
        })
    })
    .await
}

/// A streaming response that failed midway says so in its trailers (runtime-api.md §5):
/// `Lambda-Runtime-Function-Error-Type` and a base64 JSON `Lambda-Runtime-Function-Error-Body`.
/// The stream is buffered for a synchronous caller, so the caller gets the error instead.
fn streamed_error(body: &ReadBody) -> Option<Reply> {
    use base64::Engine;
    let trailers = body.trailers.as_ref()?;
    let error_type = trailers
        .get("lambda-runtime-function-error-type")?
        .to_str()
        .ok()?
        .to_owned();
    let error_body = trailers
        .get("lambda-runtime-function-error-body")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .ok()
        })
        .map(Bytes::from)
        .unwrap_or_default();
    Some(Reply::Error {
        body: error_body,
        error_type: Some(error_type),
    })
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let error_type = error_type(&headers);
    answer(&shared, &id, body, |body| Reply::Error {
        body: body.bytes,
        error_type,
    })
    .await
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if !matches!(*shared.phase.lock().expect("phase lock"), Phase::Init) {
        return invalid_state("init already finished").into_response();
    }
    let body = match read_body(body).await {
        Ok(b) => b.bytes,
        Err(e) => return e.into_response(),
    };
    let error_type = error_type(&headers);
    shared.status.send_if_modified(|s| {
        let starting = matches!(s, Status::Starting);
        if starting {
            *s = Status::InitFailed { body, error_type };
        }
        starting
    });
    accepted()
}

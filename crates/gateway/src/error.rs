//! The one place that turns errors into Lambda's wire shape (invoke-api.md §2.2): status,
//! `x-amzn-ErrorType`, and a JSON body with `Type` and `message`/`Message`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_model::ValidationError;

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    reason: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// The message shown to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }

    /// 404 `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 400 `ValidationException` (a value broke the model's constraints).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// 400 `InvalidRequestContentException` (the body is not valid JSON).
    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// 413 `RequestTooLargeException`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }

    /// 409 `ResourceConflictException`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// 412 `PreconditionFailedException` (stale `RevisionId`).
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            message,
        )
    }

    /// 429 `TooManyRequestsException` with its `Reason` and `Retry-After`.
    pub fn throttled(reason: &'static str, retry_after: Duration) -> Self {
        Self {
            reason: Some(reason),
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Rate Exceeded.",
            )
        }
    }

    /// 405 for a method the path does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedException",
            "this method is not allowed on this path",
        )
    }

    /// 503 while the server drains.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            "the server is shutting down",
        )
    }

    /// 500 `ServiceException`; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "internal error: see the server log",
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid_parameter(e.message)
    }
}

impl From<rampart_store::Error> for ApiError {
    fn from(e: rampart_store::Error) -> Self {
        use rampart_store::Error as E;
        match e {
            E::InvalidBundle(m) | E::Rejected(m) => Self::invalid_parameter(m),
            E::FunctionExists { name } => Self::conflict(format!("Function already exist: {name}")),
            E::Conflict(m) => Self::conflict(m),
            E::FunctionNotFound { name } => Self::not_found(format!("Function not found: {name}")),
            E::RevisionMismatch { .. } => Self::precondition_failed(format!(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id ({e})"
            )),
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Lambda's model spells the member `Message` on these two and `message` elsewhere.
        let message_key = match self.code {
            "ResourceNotFoundException" | "ServiceException" => "Message",
            _ => "message",
        };
        let mut body = serde_json::json!({"Type": "User", message_key: self.message});
        if self.status.is_server_error() {
            body["Type"] = "Service".into();
        }
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            headers.insert("x-amzn-requestid", id);
        }
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            headers.insert("retry-after", v);
        }
        response
    }
}

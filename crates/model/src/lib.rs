//! Rampart's vocabulary: validated names, function configurations, runtimes and limits.
//!
//! No I/O and no async here: every other crate builds on these types. Values are validated once,
//! when parsed (`FunctionName::parse`, `FunctionConfig::validate`), with the rules and messages of
//! AWS Lambda so that errors read the same as on AWS.
#![warn(missing_docs)]

mod api;
mod config;
mod limits;
mod names;

pub use api::{
    ApiSpec, CorsConfig, EventInvokeConfig, METHODS, PayloadFormat, RouteKey, RouteSpec, Segment,
    UsagePlan, destination_function,
};
pub use config::{FunctionConfig, Runtime, RuntimeFamily};
pub use limits::*;
pub use names::{FunctionName, FunctionRef, Qualifier};

use thiserror::Error;

/// A value that failed validation; `field` is the AWS parameter name it came from.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The parameter (AWS spelling, e.g. `FunctionName`, `Timeout`).
    pub field: &'static str,
    /// What is wrong with it, in the words a user can act on.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The account id Rampart reports in ARNs (a single-tenant platform has one account).
pub const ACCOUNT_ID: &str = "000000000000";

/// Builds the function ARN as Lambda prints it, with an optional `:qualifier` suffix.
pub fn function_arn(region: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
    }
}

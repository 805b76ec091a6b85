//! Integration tests: the real `rampart` binary on an ephemeral port, real runtimes, real
//! clients.

mod async_queue;
mod audit;
mod clients;
mod control;
mod deployments;
mod failures;
mod harness;
mod http_api;
mod invoke;
mod lifecycle;
mod metrics;
mod project;
mod tracing;

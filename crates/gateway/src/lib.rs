//! Rampart's HTTP front: the Lambda Invoke API, the Lambda control API subset that boto3 and
//! `rampart deploy` use, and Rampart's own management API (`/rampart/v1/...`: logs, stats).
//!
//! [`Gateway::router`] builds the axum router; handlers return `Result<_, ApiError>` and
//! [`ApiError`] alone decides the error wire shape.
#![warn(missing_docs)]

mod alarm_actions;
mod async_queue;
mod audit;
mod cloudwatch;
mod cloudwatch_alarms;
mod control;
mod deployments;
mod error;
mod event_config;
mod http_api;
mod invoke;
mod keys;
mod manage;
mod metric_math;
mod proxy_event;
mod registry;
mod routes;
mod spans;
mod versions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use rampart_model::EventInvokeConfig;
use rampart_runtime::Dispatcher;
use rampart_telemetry::Telemetry;

pub use async_queue::AsyncSettings;
pub use deployments::{Preference, Strategy};
pub use error::ApiError;
pub use registry::{Deployed, Registry};
pub use routes::RouteTable;

/// Shared state of every handler.
pub struct Gateway {
    registry: Registry,
    dispatcher: Dispatcher,
    /// Metrics: recorded, stored and queried (the CloudWatch API).
    telemetry: Arc<Telemetry>,
    region: String,
    draining: AtomicBool,
    /// The HTTP listener's routes; replaced whole when an API is deployed.
    routes: RwLock<Arc<RouteTable>>,
    /// Serialises API deploys (check conflicts, store, swap).
    api_changes: tokio::sync::Mutex<()>,
    /// API keys and usage plans.
    keys: keys::Keys,
    /// Wakes the async worker when an event is enqueued.
    queue_wakeup: tokio::sync::Notify,
    /// How asynchronous events are delivered and deduplicated.
    async_settings: AsyncSettings,
    /// Counters of asynchronous events by function.
    async_counters: std::sync::Mutex<HashMap<String, async_queue::AsyncCounters>>,
    /// Running deployments' rollback switches.
    deployments: deployments::Running,
    /// The tasks driving deployments.
    deployment_tasks: tokio_util::task::TaskTracker,
    /// Stops every deployment (the server is stopping: they roll back).
    deployments_stop: tokio_util::sync::CancellationToken,
    /// Event invoke configurations by (function, qualifier), with their last change (ms).
    event_configs: RwLock<HashMap<(String, String), (EventInvokeConfig, i64)>>,
}

impl Gateway {
    /// A gateway serving `registry`'s functions through `dispatcher`, with the stored APIs.
    ///
    /// # Errors
    /// When the stored APIs cannot be read or no longer fit together.
    pub async fn load(
        registry: Registry,
        dispatcher: Dispatcher,
        telemetry: Arc<Telemetry>,
        region: String,
        async_settings: AsyncSettings,
    ) -> Result<Arc<Self>, String> {
        let apis = registry
            .store()
            .list_apis()
            .await
            .map_err(|e| format!("reading APIs: {e}"))?;
        let routes = RouteTable::build(&apis)?;
        let keys = keys::Keys::load(registry.store())
            .await
            .map_err(|e| format!("reading API keys: {e}"))?;
        let event_configs = registry
            .store()
            .list_event_invoke_configs()
            .await
            .map_err(|e| format!("reading event invoke configs: {e}"))?
            .into_iter()
            .map(|(f, q, c, t)| ((f, q), (c, t)))
            .collect();
        let gateway = Arc::new(Self {
            deployments: deployments::Running::default(),
            deployment_tasks: tokio_util::task::TaskTracker::new(),
            deployments_stop: tokio_util::sync::CancellationToken::new(),
            async_settings,
            async_counters: std::sync::Mutex::default(),
            event_configs: RwLock::new(event_configs),
            queue_wakeup: tokio::sync::Notify::new(),
            keys,
            registry,
            dispatcher,
            telemetry,
            region,
            draining: AtomicBool::new(false),
            routes: RwLock::new(Arc::new(routes)),
            api_changes: tokio::sync::Mutex::new(()),
        });
        gateway
            .roll_back_interrupted()
            .await
            .map_err(|e| format!("rolling back interrupted deployments: {}", e.message()))?;
        Ok(gateway)
    }

    /// Stops the running deployments (each rolls back) and waits for them, within `bound`.
    pub async fn stop_deployments(&self, bound: std::time::Duration) {
        self.deployments_stop.cancel();
        self.deployment_tasks.close();
        if tokio::time::timeout(bound, self.deployment_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("deployments did not roll back in time");
        }
    }

    /// The event invoke configuration of `function:qualifier`, if one is set.
    pub(crate) fn event_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Option<(EventInvokeConfig, i64)> {
        self.event_configs
            .read()
            .expect("event configs lock")
            .get(&(function.to_owned(), qualifier.to_owned()))
            .cloned()
    }

    pub(crate) fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().expect("routes lock").clone()
    }

    /// The router of the HTTP listener (API routes). Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: events carry the source IP.
    pub fn http_router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(http_api::serve)
            .with_state(self.clone())
    }

    /// Samples each function's queue depth and instance count into its metrics every
    /// `every`, until `shutdown`.
    pub async fn run_sampler(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = jiff::Timestamp::now().as_second();
            for name in self.registry.names() {
                let meters = self.telemetry.lambda().function(&name, "$LATEST");
                let stats = self.dispatcher.stats(&name);
                meters.instances.record(now, stats.instances as f64);
                meters
                    .degraded
                    .record(now, f64::from(u8::from(stats.degraded)));
                match self.registry.store().queue_depth(&name).await {
                    Ok((depth, _)) => meters.queue_depth.record(now, depth as f64),
                    Err(e) => {
                        tracing::warn!(error = %e, function = %name, "sampling the queue depth failed")
                    }
                }
            }
        }
    }

    /// From now on, invocations get 503 (the server is draining).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The functions served.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The router of the whole API.
    pub fn router(self: &Arc<Self>) -> Router {
        let functions = "/2015-03-31/functions";
        Router::new()
            // CloudWatch (awsJson 1.0: the operation is in `X-Amz-Target`).
            .route(
                "/",
                post(cloudwatch::serve)
                    .layer(DefaultBodyLimit::max(2 * cloudwatch::MAX_REQUEST_BYTES)),
            )
            .route(
                &format!("{functions}/{{name}}/invocations"),
                post(invoke::invoke).layer(DefaultBodyLimit::disable()),
            )
            .route(
                functions,
                post(control::create_function)
                    .get(control::list_functions)
                    .layer(DefaultBodyLimit::max(rampart_model::MAX_CONTROL_BODY_BYTES)),
            )
            .route(
                &format!("{functions}/{{name}}"),
                get(control::get_function).delete(control::delete_function),
            )
            .route(
                &format!("{functions}/{{name}}/configuration"),
                get(control::get_function_configuration)
                    .put(control::update_function_configuration),
            )
            .route(
                &format!("{functions}/{{name}}/code"),
                put(control::update_function_code)
                    .layer(DefaultBodyLimit::max(rampart_model::MAX_CONTROL_BODY_BYTES)),
            )
            .route(
                &format!("{functions}/{{name}}/versions"),
                post(versions::publish).get(versions::list_versions),
            )
            .route(
                &format!("{functions}/{{name}}/aliases"),
                post(versions::create_alias).get(versions::list_aliases),
            )
            .route(
                &format!("{functions}/{{name}}/aliases/{{alias}}"),
                get(versions::get_alias)
                    .put(versions::update_alias)
                    .delete(versions::delete_alias),
            )
            .route(
                "/2017-10-31/functions/{name}/concurrency",
                put(control::put_concurrency).delete(control::delete_concurrency),
            )
            .route(
                "/2019-09-30/functions/{name}/concurrency",
                get(control::get_concurrency),
            )
            .route(
                "/2019-09-25/functions/{name}/event-invoke-config",
                put(event_config::put)
                    .post(event_config::update)
                    .get(event_config::get)
                    .delete(event_config::delete),
            )
            .route(
                "/2019-09-25/functions/{name}/event-invoke-config/list",
                get(event_config::list),
            )
            .route("/rampart/v1/dlq/{id}", get(manage::dead_letter))
            .route(
                "/rampart/v1/functions/{name}/dlq/replay",
                post(manage::replay_dead_letters),
            )
            .route("/rampart/v1/health", get(|| async { "ok" }))
            .route("/rampart/v1/apis", get(manage::list_apis))
            .route(
                "/rampart/v1/keys",
                get(manage::list_keys).post(manage::create_key),
            )
            .route("/rampart/v1/keys/{name}", delete(manage::delete_key))
            .route("/rampart/v1/plans", get(manage::list_plans))
            .route(
                "/rampart/v1/plans/{name}",
                put(manage::put_plan).delete(manage::delete_plan),
            )
            .route(
                "/rampart/v1/apis/{name}",
                put(manage::put_api).delete(manage::delete_api),
            )
            .route("/rampart/v1/code/{sha}", get(control::download_code))
            .route("/rampart/v1/functions/{name}/logs", get(manage::logs))
            .route("/rampart/v1/functions/{name}/stats", get(manage::stats))
            .route(
                "/rampart/v1/functions/{name}/dlq",
                get(manage::dead_letters).delete(manage::purge_dead_letters),
            )
            .route("/metrics", get(manage::prometheus))
            .route("/rampart/v1/deployments", get(deployments::list))
            .route(
                "/rampart/v1/functions/{name}/deployments",
                post(deployments::start),
            )
            .route(
                "/rampart/v1/functions/{name}/deployments/rollback",
                post(deployments::rollback),
            )
            .route("/rampart/v1/audit", get(audit::list))
            .route("/rampart/v1/audit/verify", get(audit::verify))
            // After the routes: it needs the matched route to name the action.
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                audit::record,
            ))
            .fallback(|| async { ApiError::not_found("no such API path") })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
            .with_state(self.clone())
    }
}

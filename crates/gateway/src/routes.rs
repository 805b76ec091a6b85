//! The route table of the HTTP listener: every API's routes, matched as API Gateway does
//! (literal > `{param}` > `{proxy+}`, explicit method > `ANY`, `$default` last).

use std::collections::HashMap;
use std::sync::Arc;

use rampart_model::{ApiSpec, PayloadFormat, RouteKey, RouteSpec, Segment};

/// One route, resolved.
#[derive(Debug)]
pub struct Route {
    /// The API it belongs to.
    pub api: Arc<ApiSpec>,
    /// The route as declared.
    pub spec: RouteSpec,
    /// The resource template without the stage prefix (`/pets/{id}`), or `$default`.
    pub template: String,
    /// The payload format it uses.
    pub format: PayloadFormat,
    /// Literal, then parameter segments: more is more specific.
    specificity: (usize, usize),
}

/// A request matched to a route.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The route.
    pub route: &'a Route,
    /// Path parameters, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The request path without the stage prefix.
    pub path: String,
}

/// All routes of all APIs, ready to match.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_method: HashMap<String, matchit::Router<usize>>,
    default: Option<usize>,
}

fn describe(route: &Route) -> String {
    format!("route '{}' of API '{}'", route.spec.route, route.api.name)
}

impl RouteTable {
    /// Builds the table.
    ///
    /// # Errors
    /// A message naming both routes when two of them claim the same requests.
    pub fn build(apis: &[ApiSpec]) -> Result<Self, String> {
        let mut table = Self::default();
        for api in apis {
            let api = Arc::new(api.clone());
            let prefix = match api.stage.as_str() {
                "$default" => String::new(),
                stage => format!("/{stage}"),
            };
            for spec in &api.routes {
                let key = RouteKey::parse(&spec.route).map_err(|e| e.message)?;
                let index = table.routes.len();
                let (template, pattern, method, specificity) = match &key {
                    RouteKey::Default => ("$default".to_owned(), None, None, (0, 0)),
                    RouteKey::Path { method, segments } => {
                        let template = format!(
                            "/{}",
                            segments
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("/")
                        );
                        let pattern: Vec<String> = segments
                            .iter()
                            .map(|s| match s {
                                // matchit treats braces specially: literals never hold them.
                                Segment::Literal(l) => l.clone(),
                                Segment::Param(p) => format!("{{{p}}}"),
                                Segment::Greedy(p) => format!("{{*{p}}}"),
                            })
                            .collect();
                        let pattern = if pattern.is_empty() && !prefix.is_empty() {
                            prefix.clone()
                        } else {
                            format!("{prefix}/{}", pattern.join("/"))
                        };
                        let literals = segments
                            .iter()
                            .filter(|s| matches!(s, Segment::Literal(_)))
                            .count();
                        let params = segments
                            .iter()
                            .filter(|s| matches!(s, Segment::Param(_)))
                            .count();
                        (
                            template,
                            Some(pattern),
                            Some(method.clone()),
                            (literals, params),
                        )
                    }
                };
                table.routes.push(Route {
                    api: api.clone(),
                    spec: spec.clone(),
                    template,
                    format: api.format_of(spec),
                    specificity,
                });
                match (pattern, method) {
                    (Some(pattern), Some(method)) => {
                        let router = table.by_method.entry(method).or_default();
                        if let Err(e) = router.insert(pattern.clone(), index) {
                            let other = match &e {
                                matchit::InsertError::Conflict { with } => {
                                    router.at(with).ok().map(|m| *m.value)
                                }
                                _ => None,
                            };
                            let this = describe(&table.routes[index]);
                            return Err(match other {
                                Some(o) => {
                                    format!("{this} conflicts with {}", describe(&table.routes[o]))
                                }
                                None => format!("{this} cannot be served: {e}"),
                            });
                        }
                    }
                    _ => {
                        if let Some(other) = table.default {
                            return Err(format!(
                                "{} conflicts with {}",
                                describe(&table.routes[index]),
                                describe(&table.routes[other])
                            ));
                        }
                        table.default = Some(index);
                    }
                }
            }
        }
        Ok(table)
    }

    /// Finds the route for a request; `path` is the raw (percent-encoded) request path.
    pub fn find(&self, method: &str, path: &str) -> Option<Matched<'_>> {
        let lookup = |m: &str| {
            let found = self.by_method.get(m)?.at(path).ok()?;
            let params = found
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), decode(v)))
                .collect::<Vec<_>>();
            Some((*found.value, params))
        };
        let explicit = lookup(method);
        let any = lookup("ANY");
        let (index, params) = match (explicit, any) {
            (Some(e), Some(a)) => {
                if self.routes[a.0].specificity > self.routes[e.0].specificity {
                    a
                } else {
                    e
                }
            }
            (Some(e), None) => e,
            (None, Some(a)) => a,
            (None, None) => (self.default?, Vec::new()),
        };
        let route = &self.routes[index];
        let path = match route.api.stage.as_str() {
            "$default" => path.to_owned(),
            stage => {
                let rest = path.strip_prefix(&format!("/{stage}")).unwrap_or(path);
                if rest.is_empty() {
                    "/".to_owned()
                } else {
                    rest.to_owned()
                }
            }
        };
        Some(Matched {
            route,
            params,
            path,
        })
    }

    /// The payload format of the API an unmatched `path` most likely meant: the API whose named
    /// stage prefixes it, else the only format of the `$default`-stage APIs, else 2.0.
    pub fn unmatched_format(&self, path: &str) -> PayloadFormat {
        let by_stage = self.routes.iter().find(|r| {
            r.api.stage != "$default"
                && (path == format!("/{}", r.api.stage)
                    || path.starts_with(&format!("/{}/", r.api.stage)))
        });
        if let Some(route) = by_stage {
            return route.api.payload_format;
        }
        let mut formats = self
            .routes
            .iter()
            .filter(|r| r.api.stage == "$default")
            .map(|r| r.api.payload_format);
        match formats.next() {
            Some(first) if formats.all(|f| f == first) => first,
            _ => PayloadFormat::V2,
        }
    }

    /// Every function the routes call.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.spec.function.as_str())
    }
}

/// Percent-decodes a path piece (invalid UTF-8 is replaced, never an error).
pub fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(name: &str, stage: &str, routes: &[&str]) -> ApiSpec {
        ApiSpec {
            name: name.into(),
            stage: stage.into(),
            payload_format: PayloadFormat::V2,
            timeout_ms: None,
            cors: None,
            stage_variables: Default::default(),
            routes: routes
                .iter()
                .map(|r| RouteSpec {
                    route: (*r).into(),
                    function: format!("fn-{}", r.len()),
                    payload_format: None,
                    api_key_required: false,
                    asynchronous: false,
                })
                .collect(),
        }
    }

    fn matched(table: &RouteTable, method: &str, path: &str) -> Option<String> {
        table.find(method, path).map(|m| m.route.spec.route.clone())
    }

    #[test]
    fn most_specific_route_wins() {
        let table = RouteTable::build(&[api(
            "a",
            "$default",
            &[
                "GET /pets/{id}",
                "GET /pets/dog",
                "ANY /pets/cat",
                "ANY /{proxy+}",
                "POST /pets/{id}",
                "$default",
                "GET /",
            ],
        )])
        .unwrap();
        assert_eq!(
            matched(&table, "GET", "/pets/dog").as_deref(),
            Some("GET /pets/dog")
        );
        assert_eq!(
            matched(&table, "GET", "/pets/42").as_deref(),
            Some("GET /pets/{id}")
        );
        assert_eq!(
            matched(&table, "GET", "/pets/cat").as_deref(),
            Some("ANY /pets/cat"),
            "literal beats param"
        );
        assert_eq!(
            matched(&table, "DELETE", "/pets/42").as_deref(),
            Some("ANY /{proxy+}")
        );
        assert_eq!(matched(&table, "GET", "/").as_deref(), Some("GET /"));
        assert_eq!(matched(&table, "POST", "/").as_deref(), Some("$default"));
        let m = table.find("GET", "/a/b%20c/d").unwrap();
        assert_eq!(m.params, vec![("proxy".to_string(), "a/b c/d".to_string())]);
    }

    #[test]
    fn stages_prefix_paths() {
        let table = RouteTable::build(&[api("a", "prod", &["GET /pets/{id}"])]).unwrap();
        assert!(table.find("GET", "/pets/1").is_none());
        let m = table.find("GET", "/prod/pets/1").unwrap();
        assert_eq!(m.path, "/pets/1");
        assert_eq!(m.route.template, "/pets/{id}");
    }

    #[test]
    fn conflicts_name_both_routes() {
        let err = RouteTable::build(&[
            api("a", "$default", &["GET /x/{id}"]),
            api("b", "$default", &["GET /x/{name}"]),
        ])
        .err()
        .unwrap();
        assert!(
            err.contains("'GET /x/{name}' of API 'b'") && err.contains("'GET /x/{id}' of API 'a'"),
            "{err}"
        );
        let err = RouteTable::build(&[
            api("a", "$default", &["$default"]),
            api("b", "$default", &["$default"]),
        ])
        .err()
        .unwrap();
        assert!(err.contains("API 'a'") && err.contains("API 'b'"), "{err}");
        assert!(
            RouteTable::build(&[
                api("a", "$default", &["GET /x"]),
                api("b", "v2", &["GET /x"])
            ])
            .is_ok()
        );
    }
}

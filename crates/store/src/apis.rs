//! HTTP APIs (route tables), stored whole as JSON.

use rampart_model::ApiSpec;
use rusqlite::params;

use crate::{Error, Result, Store};

impl Store {
    /// Creates or replaces an API.
    pub async fn put_api(&self, api: ApiSpec, now_ms: i64) -> Result<()> {
        let spec = serde_json::to_string(&api).expect("an API spec always serializes");
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO apis (name, spec, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
                params![api.name, spec, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes an API; false when there was none.
    pub async fn delete_api(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| Ok(conn.execute("DELETE FROM apis WHERE name = ?1", [&name])? > 0))
            .await
    }

    /// Every API, by name.
    pub async fn list_apis(&self) -> Result<Vec<ApiSpec>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT spec FROM apis ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|spec| {
                let spec = spec?;
                serde_json::from_str(&spec).map_err(|e| Error::Corrupt(format!("api spec: {e}")))
            })
            .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_model::{PayloadFormat, RouteSpec};

    #[tokio::test]
    async fn apis_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let api = ApiSpec {
            name: "shop".into(),
            stage: "$default".into(),
            payload_format: PayloadFormat::V1,
            timeout_ms: Some(500),
            cors: None,
            stage_variables: Default::default(),
            routes: vec![RouteSpec {
                route: "GET /a".into(),
                function: "f".into(),
                payload_format: Some(PayloadFormat::Body),
                api_key_required: true,
                asynchronous: false,
            }],
        };
        store.put_api(api.clone(), 1).await.unwrap();
        let mut changed = api.clone();
        changed.routes.clear();
        store.put_api(changed.clone(), 2).await.unwrap();
        assert_eq!(store.list_apis().await.unwrap(), vec![changed]);
        assert!(store.delete_api("shop").await.unwrap());
        assert!(!store.delete_api("shop").await.unwrap());
        assert!(store.list_apis().await.unwrap().is_empty());
    }
}

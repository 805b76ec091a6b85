//! The functions being served: a cache of each function's newest version (what `$LATEST`
//! runs) in front of the store, so the invoke path reads no database. Deploys go through here:
//! install the bundle, commit the version, then publish it to the cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rampart_model::{FunctionConfig, FunctionName};
use rampart_runtime::{Dispatcher, FunctionSpec};
use rampart_store::{
    AliasChange, AliasRecord, CodeBundle, CodeStore, FunctionRecord, Store, VersionRecord,
};

use crate::ApiError;

/// The newest version of a function and its record.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The function and its newest version, as stored.
    pub record: FunctionRecord,
    /// What `$LATEST` runs.
    pub spec: Arc<FunctionSpec>,
}

/// Functions, their versions and their code.
pub struct Registry {
    store: Store,
    code: CodeStore,
    dispatcher: Dispatcher,
    latest: RwLock<HashMap<String, Arc<Deployed>>>,
    versions: RwLock<HashMap<(String, u64), Arc<FunctionSpec>>>,
    /// Aliases by (function, alias).
    aliases: RwLock<HashMap<(String, String), AliasRecord>>,
    /// Serialises changes (store commit plus cache update), so a delete and an update of the
    /// same function cannot interleave and leave the cache disagreeing with the store.
    /// Deploys are rare; one lock for all functions keeps it simple.
    changes: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Loads every function from the store, reinstalling any bundle whose unpacked directory
    /// is missing, and starts warm pools.
    ///
    /// # Errors
    /// When the store cannot be read or a bundle cannot be restored.
    pub async fn load(
        store: Store,
        code: CodeStore,
        dispatcher: Dispatcher,
    ) -> Result<Self, rampart_store::Error> {
        let registry = Self {
            store,
            code,
            dispatcher,
            latest: RwLock::default(),
            versions: RwLock::default(),
            aliases: RwLock::default(),
            changes: tokio::sync::Mutex::new(()),
        };
        for alias in registry.store.list_aliases().await? {
            registry.cache_alias(alias);
        }
        let mut after = None;
        loop {
            let page = registry.store.list_functions(after.clone(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.latest.function.clone());
            for record in page {
                registry.ensure_unpacked(&record.latest.code_sha256).await?;
                registry.publish(record);
            }
        }
        let in_use = registry.store.code_in_use().await?;
        let code = registry.code.clone();
        let removed = tokio::task::spawn_blocking(move || code.retain(&in_use))
            .await
            .map_err(|_| rampart_store::Error::Closed)??;
        if removed > 0 {
            tracing::info!(removed, "removed unused code bundles");
        }
        Ok(registry)
    }

    async fn ensure_unpacked(&self, sha256_hex: &str) -> Result<(), rampart_store::Error> {
        if tokio::fs::try_exists(self.code.task_root(sha256_hex))
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        let code = self.code.clone();
        let sha = sha256_hex.to_owned();
        tokio::task::spawn_blocking(move || {
            let zip = code.read_zip(&sha)?;
            code.install(&zip).map(|_| ())
        })
        .await
        .map_err(|_| rampart_store::Error::Closed)?
    }

    fn spec(&self, version: &VersionRecord, label: Arc<str>) -> Arc<FunctionSpec> {
        Arc::new(FunctionSpec {
            name: version.function.as_str().into(),
            version: version.version,
            version_label: label,
            config: version.config.clone(),
            task_root: self.code.task_root(&version.code_sha256),
        })
    }

    /// Makes `record` what `$LATEST` serves, unless a newer version is already published.
    fn publish(&self, record: FunctionRecord) -> Arc<Deployed> {
        let spec = self.spec(&record.latest, "$LATEST".into());
        let deployed = Arc::new(Deployed { record, spec });
        let mut latest = self.latest.write().expect("registry lock");
        let name = deployed.record.latest.function.clone();
        let current = latest.get(&name);
        if current.is_some_and(|c| c.record.latest.version > deployed.record.latest.version) {
            return current.expect("checked above").clone();
        }
        latest.insert(name.clone(), deployed.clone());
        drop(latest);
        self.dispatcher
            .set_concurrency(&name, deployed.spec.config.concurrency_limit());
        self.dispatcher.ensure_warm(deployed.spec.clone());
        deployed
    }

    /// The names of every function.
    pub fn names(&self) -> Vec<String> {
        self.latest
            .read()
            .expect("registry lock")
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// The newest version of a function.
    pub fn latest(&self, name: &str) -> Option<Arc<Deployed>> {
        self.latest
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
    }

    /// A numbered version of a function.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<Arc<FunctionSpec>>, ApiError> {
        let key = (name.to_owned(), version);
        if let Some(spec) = self.versions.read().expect("registry lock").get(&key) {
            return Ok(Some(spec.clone()));
        }
        let Some(record) = self.store.get_version(name, version).await? else {
            return Ok(None);
        };
        let spec = self.spec(&record, version.to_string().into());
        self.versions
            .write()
            .expect("registry lock")
            .insert(key, spec.clone());
        Ok(Some(spec))
    }

    /// The stored zip of a bundle in use (in a blocking thread).
    ///
    /// # Errors
    /// `ResourceNotFoundException` when no function version uses it.
    pub async fn read_code(&self, sha256_hex: String) -> Result<Vec<u8>, ApiError> {
        if !self.store.code_in_use().await?.contains(&sha256_hex) {
            return Err(ApiError::not_found("no such code bundle"));
        }
        let code = self.code.clone();
        Ok(
            tokio::task::spawn_blocking(move || code.read_zip(&sha256_hex))
                .await
                .map_err(|e| ApiError::internal(&e))??,
        )
    }

    /// Installs a bundle from zip bytes (in a blocking thread).
    ///
    /// # Errors
    /// `InvalidParameterValueException` naming what is wrong with the zip.
    pub async fn install_code(&self, zip: Vec<u8>) -> Result<CodeBundle, ApiError> {
        let code = self.code.clone();
        Ok(tokio::task::spawn_blocking(move || code.install(&zip))
            .await
            .map_err(|e| ApiError::internal(&e))??)
    }

    /// Creates a function.
    ///
    /// # Errors
    /// `ResourceConflictException` when it exists.
    pub async fn create(
        &self,
        name: &FunctionName,
        config: FunctionConfig,
        bundle: &CodeBundle,
    ) -> Result<Arc<Deployed>, ApiError> {
        let _changing = self.changes.lock().await;
        let record = self
            .store
            .create_function(
                name.to_string(),
                config,
                bundle.sha256_hex.clone(),
                bundle.size,
                now_ms(),
            )
            .await?;
        Ok(self.publish(record))
    }

    /// Creates a new version from the newest one, changed by `change`.
    ///
    /// # Errors
    /// `ResourceNotFoundException`, `PreconditionFailedException` on a stale revision, or the
    /// validation error `change` returns.
    pub async fn update<F>(
        &self,
        name: &FunctionName,
        revision: Option<String>,
        change: F,
    ) -> Result<Arc<Deployed>, ApiError>
    where
        F: FnOnce(&mut VersionRecord) -> Result<(), String> + Send + 'static,
    {
        let _changing = self.changes.lock().await;
        let record = self
            .store
            .update_function(name.to_string(), revision, now_ms(), move |v| {
                change(v).map_err(rampart_store::Error::Rejected)
            })
            .await?;
        self.dispatcher.retire_latest(name.as_str());
        Ok(self.publish(record))
    }

    /// Deletes a function; its instances end.
    ///
    /// # Errors
    /// `ResourceNotFoundException`.
    pub async fn delete(&self, name: &FunctionName) -> Result<(), ApiError> {
        let _changing = self.changes.lock().await;
        self.store.delete_function(name.as_str()).await?;
        self.latest
            .write()
            .expect("registry lock")
            .remove(name.as_str());
        self.versions
            .write()
            .expect("registry lock")
            .retain(|(n, _), _| n != name.as_str());
        self.aliases
            .write()
            .expect("registry lock")
            .retain(|(n, _), _| n != name.as_str());
        self.dispatcher.retire_function(name.as_str());
        Ok(())
    }

    fn cache_alias(&self, alias: AliasRecord) {
        self.aliases
            .write()
            .expect("registry lock")
            .insert((alias.function.clone(), alias.name.clone()), alias);
    }

    /// An alias, from the cache.
    pub fn alias(&self, function: &str, name: &str) -> Option<AliasRecord> {
        self.aliases
            .read()
            .expect("registry lock")
            .get(&(function.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A function's aliases, by name.
    pub fn aliases_of(&self, function: &str) -> Vec<AliasRecord> {
        let mut out: Vec<AliasRecord> = self
            .aliases
            .read()
            .expect("registry lock")
            .values()
            .filter(|a| a.function == function)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Publishes the newest version (serialized with other changes).
    pub async fn publish_version(
        &self,
        function: &str,
        code_sha256_hex: Option<String>,
        revision_id: Option<String>,
        description: String,
    ) -> Result<u64, ApiError> {
        let _changing = self.changes.lock().await;
        Ok(self
            .store
            .publish_version(function, code_sha256_hex, revision_id, description)
            .await?)
    }

    /// Creates (`create`) or updates an alias (`revision_id`, when given, must be current).
    pub async fn put_alias(
        &self,
        function: &str,
        name: &str,
        change: AliasChange,
        create: bool,
        revision_id: Option<String>,
    ) -> Result<AliasRecord, ApiError> {
        let _changing = self.changes.lock().await;
        let alias = if create {
            self.store.create_alias(function, name, change).await?
        } else {
            self.store
                .update_alias(function, name, change, revision_id)
                .await?
        };
        self.cache_alias(alias.clone());
        Ok(alias)
    }

    /// Deletes an alias.
    pub async fn delete_alias(&self, function: &str, name: &str) -> Result<(), ApiError> {
        let _changing = self.changes.lock().await;
        self.store.delete_alias(function, name).await?;
        self.aliases
            .write()
            .expect("registry lock")
            .remove(&(function.to_owned(), name.to_owned()));
        Ok(())
    }

    /// Deletes a published version (refused while an alias uses it).
    pub async fn delete_version(&self, function: &str, version: u64) -> Result<(), ApiError> {
        let _changing = self.changes.lock().await;
        self.store.delete_version(function, version).await?;
        self.versions
            .write()
            .expect("registry lock")
            .remove(&(function.to_owned(), version));
        Ok(())
    }

    /// The store behind the registry.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

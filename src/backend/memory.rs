//! An in-memory backend for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BResult, Backend, BackendError, BackendErrorKind, Entry};

#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    async fn put(&self, key: &str, data: Bytes) -> BResult<()> {
        let mut m = self.lock();
        if m.contains_key(key) {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                "put",
                key,
                "exists",
            ));
        }
        m.insert(key.to_string(), data);
        Ok(())
    }

    async fn get(&self, key: &str) -> BResult<Bytes> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| BackendError::new(BackendErrorKind::NotFound, "get", key, "not found"))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BResult<Bytes> {
        let data = self.get(key).await?;
        let end = offset.saturating_add(len);
        if end > data.len() as u64 {
            return Err(BackendError::new(
                BackendErrorKind::Permanent,
                "get_range",
                key,
                "range beyond the end",
            ));
        }
        Ok(data.slice(offset as usize..end as usize))
    }

    async fn list(&self, prefix: &str) -> BResult<Vec<Entry>> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Entry {
                key: k.clone(),
                size: v.len() as u64,
                modified: None,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> BResult<()> {
        self.lock().remove(key);
        Ok(())
    }

    async fn stat(&self, key: &str) -> BResult<Option<u64>> {
        Ok(self.lock().get(key).map(|v| v.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let b = super::MemoryBackend::new();
        super::super::conformance::run(&b).await;
        super::super::conformance::run_large(&b).await;
    }
}

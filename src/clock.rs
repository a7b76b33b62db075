//! Time comes from here, so tests can fake it (a habit from Kopia).

#[cfg(any(test, feature = "testing"))]
use std::sync::Arc;
#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::{AtomicI64, Ordering};

use crate::format::Timestamp;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }
}

/// A clock that only moves when told to.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct FakeClock {
    secs: AtomicI64,
}

#[cfg(any(test, feature = "testing"))]
impl FakeClock {
    pub fn new(secs: i64) -> Arc<FakeClock> {
        Arc::new(FakeClock {
            secs: AtomicI64::new(secs),
        })
    }
    pub fn advance(&self, secs: i64) {
        self.secs.fetch_add(secs, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::new(self.secs.load(Ordering::SeqCst), 0)
    }
}

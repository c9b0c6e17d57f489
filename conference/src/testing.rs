//! A conference for other crates' unit tests: SQLite in a directory the test owns,
//! the system clock, an hour for sessions and tokens, no cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::store::SqlStore;
use crate::{system_clock, Conference, Options};

/// Open one in `dir` (panics if it cannot: test support only).
pub async fn sqlite_conference(dir: &std::path::Path) -> Arc<Conference> {
    let store = SqlStore::sqlite(&dir.join("p.db")).await.expect("store");
    let options = Options {
        session_ttl: Duration::from_secs(3600),
        token_ttl: Duration::from_secs(3600),
        token_secret: None,
        clock: system_clock(),
        sip_stream_alias: "phone".into(),
        cluster: None,
        lease: Duration::from_secs(10),
    };
    let conference = Conference::open(Arc::new(store), options).await;
    Arc::new(conference.expect("conference"))
}

//! Databases on the test PostgreSQL server that `scripts/test` starts (`scripts/postgres`)
//! and names in `PATCHBAY_TEST_POSTGRES`.

use std::process::Command;

/// The test server's base URL (`postgres://patchbay@127.0.0.1:PORT`).
pub fn server() -> String {
    std::env::var("PATCHBAY_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "PATCHBAY_TEST_POSTGRES is not set: ./scripts/test starts a private PostgreSQL and \
             sets it (or: export PATCHBAY_TEST_POSTGRES=$(scripts/postgres start /tmp/pb-pg))"
        )
    })
}

/// A new, empty database on the test server: its URL, verifying the server's certificate
/// against the test CA (`sslmode=verify-full`, as docs/cluster.md tells operators).
pub fn database() -> String {
    let base = server();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .arg(format!("{base}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql (Debian's postgresql-client)");
    assert!(
        out.status.success(),
        "creating a test database on {base} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = crate::workspace().join("tests/data/tls/ca.pem");
    format!(
        "{base}/{name}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    )
}

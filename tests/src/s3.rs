//! An S3-compatible server for the recordings' uploads: moto's server (from PyPI,
//! installed by `scripts/test` into the test virtualenv), a process that can be stopped
//! and started again on the same port (it keeps objects in memory: a restart empties it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub bucket: String,
}

impl S3Server {
    /// Start a server with an empty `bucket`.
    pub async fn start(bucket: &str) -> S3Server {
        let mut s = S3Server {
            child: None,
            port: free_port(),
            bucket: bucket.to_string(),
        };
        s.up().await;
        s
    }

    /// The endpoint for `recordings_s3_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start it (again), and create the bucket.
    pub async fn up(&mut self) {
        let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
        let server = std::path::Path::new(&python).with_file_name("moto_server");
        let mut cmd = Command::new(server);
        crate::own_group(&mut cmd);
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run moto_server (scripts/test installs moto[server])");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let made = client
                .put(format!("{}/{}", self.endpoint(), self.bucket))
                .send()
                .await;
            if made.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < end, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop it (the port refuses connections).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::kill_group(&mut c);
        }
    }

    /// The bucket's keys (ListObjectsV2, first page).
    pub async fn keys(&self) -> Vec<String> {
        let Ok(r) = reqwest::get(format!("{}/{}?list-type=2", self.endpoint(), self.bucket)).await
        else {
            return Vec::new();
        };
        let text = r.text().await.unwrap_or_default();
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(String::from)
            .collect()
    }

    /// An object's bytes, if the bucket has it (read with boto3, signed: the server
    /// refuses anonymous reads of objects).
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = r#"
import sys, boto3
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',
                  aws_access_key_id='patchbay-test', aws_secret_access_key='patchbay-test-secret')
try:
    sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read())
except s3.exceptions.NoSuchKey:
    sys.exit(3)
"#;
        let out = tokio::process::Command::new(python)
            .args(["-c", script, &self.endpoint(), &self.bucket, key])
            .output()
            .await
            .ok()?;
        out.status.success().then_some(out.stdout)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.down();
    }
}

//! The console's static files, from `console_dir` (built by `scripts/run`): `/` and
//! `/console` redirect to `/console/`; a path that names no file gets `index.html`
//! (the console routes in the page). Nothing outside the directory is ever read: a
//! path with `..`, a hidden segment, a backslash or a NUL is refused before the file
//! system is asked.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::AppState;

/// Largest file served (the built console's biggest chunk is well under it).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn root() -> Redirect {
    Redirect::to("/console/")
}

pub async fn index(State(app): State<AppState>) -> Response {
    serve(&app, "").await
}

pub async fn file(State(app): State<AppState>, Path(path): Path<String>) -> Response {
    serve(&app, &path).await
}

/// `rel` as a path inside the console's directory, if it is a plain relative path.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for segment in rel.split('/').filter(|s| !s.is_empty()) {
        let plain = !segment.starts_with('.')
            && !segment.contains(['\\', '\0', ':'])
            && segment.len() <= 255;
        if !plain {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn read(path: &FsPath) -> Option<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    tokio::fs::read(path).await.ok()
}

async fn serve(app: &AppState, rel: &str) -> Response {
    let Some(dir) = app.console.dir.as_deref() else {
        return not_built("no console_dir is configured");
    };
    let Some(rel) = safe_relative(rel) else {
        return ApiError::NotFound("no such file".into()).into_response();
    };
    let asked = dir.join(&rel);
    let (path, bytes) = match read(&asked).await {
        Some(b) if !rel.as_os_str().is_empty() => (asked, b),
        // Not a file (a route of the page, or the directory itself): the page.
        _ => {
            let index = dir.join("index.html");
            match read(&index).await {
                Some(b) => (index, b),
                None => return not_built("the console is not built"),
            }
        }
    };
    let mut r = (StatusCode::OK, Body::from(bytes)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    // Built assets carry their hash in the name; the page itself is always fresh.
    let cache = if rel.starts_with("assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// The JSON error every route answers with, saying how to get the console.
fn not_built(why: &str) -> Response {
    ApiError::Unavailable(format!(
        "the web console is not available: {why}; build it with ./scripts/run (or `npm --prefix console ci && npm --prefix console run build`) and set console_dir to console/dist"
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert_eq!(
            safe_relative("assets/index-1.js"),
            Some(PathBuf::from("assets/index-1.js"))
        );
        assert_eq!(safe_relative(""), Some(PathBuf::new()));
        for bad in [
            "../etc/passwd",
            "a/../../b",
            ".env",
            "a/.git/config",
            "a\\b",
            "c:x",
            "a\0b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}

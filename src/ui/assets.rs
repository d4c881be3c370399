//! The dashboard's static files, embedded in the binary: its stylesheet, its script and
//! Chart.js (v4, the UMD build; MIT, its licence beside it in `assets/`).
//!
//! A page links each with `?v=` and a digest of its bytes ([`url`]), so a file is cached for
//! a year and a new build's file is a new URL; a request with any other `v` (or none) is
//! answered `no-cache`, revalidated by its `ETag`.

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/ui.css"),
    },
    Asset {
        name: "ui.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/ui.js"),
    },
    Asset {
        name: "chart.umd.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/chart.umd.min.js"),
    },
];

/// Each asset's version: the first 16 hex digits of its SHA-256, in [`ASSETS`]' order.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            Sha256::digest(asset.bytes)
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    let at = ASSETS.iter().position(|a| a.name == name)?;
    Some((&ASSETS[at], VERSIONS[at].as_str()))
}

/// The URL of the asset `name` (one of [`ASSETS`]), versioned by its content.
pub fn url(name: &str) -> String {
    let (asset, version) = find(name).expect("a known asset");
    format!("/ui/assets/{}?v={version}", asset.name)
}

#[derive(Deserialize)]
pub struct Version {
    v: Option<String>,
}

/// `GET /ui/assets/{name}`.
pub async fn serve(
    Path(name): Path<String>,
    Query(query): Query<Version>,
    headers: HeaderMap,
) -> Response {
    let Some((asset, version)) = find(&name) else {
        return super::page::not_found().await.into_response();
    };
    let etag = format!("\"{version}\"");
    let cache = if query.v.as_deref() == Some(version) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

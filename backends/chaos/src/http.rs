//! Plain HTTP/1.1 GETs of JSON from Prometheus and Alertmanager on 127.0.0.1 (no TLS: the
//! stack publishes both on the loopback interface only).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

/// Longest one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a GET failed.
#[derive(Debug, Error)]
#[error("GET {url}: {why}")]
pub struct HttpError {
    /// The URL.
    pub url: String,
    /// Why.
    pub why: String,
}

/// A pooled plain-HTTP client.
#[derive(Clone, Debug)]
pub struct Http(Client<HttpConnector, Empty<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    /// `GET url` and its body as JSON.
    ///
    /// # Errors
    ///
    /// A connection error, a timeout, a status other than 200 or a body that is not JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, HttpError> {
        let err = |why: String| HttpError {
            url: url.to_owned(),
            why,
        };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self.0.get(uri).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| err(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(err)?;
        if answer.0 != http::StatusCode::OK {
            return Err(err(format!(
                "HTTP {}: {}",
                answer.0,
                String::from_utf8_lossy(&answer.1)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        serde_json::from_slice(&answer.1).map_err(|e| err(format!("not JSON: {e}")))
    }
}

/// `s` escaped for a URL query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! The one error form of the control API over HTTP: `{"error": "..."}` (docs/api.md), whoever
//! made the answer.
//!
//! Handlers and authorization write that form themselves. What they do not write is turned into
//! it by [`json_errors`], a layer around the whole router: axum's extractor rejections (400 for
//! JSON that does not parse, 413 for a body over the limit, 415 for a missing
//! `Content-Type: application/json`, 422 for JSON of the wrong shape or with an unknown field),
//! the router's own 404 and 405 ([`no_route`], [`method_not_allowed`]), and any other plain
//! text error. The status and the other headers are kept; the text becomes the `error` string.
//!
//! Request headers over [`MAX_REQUEST_HEADER_BYTES`] are refused here with a JSON `431`, below
//! the limits of the HTTP libraries, so a client that sends too much gets the documented form
//! in the common case. What no layer can reach: answers the libraries make before a request
//! exists. hyper answers an HTTP/1.1 request head over its buffer (about 400 KiB) with a bare
//! `431`, and h2 refuses an HTTP/2 header block over `SETTINGS_MAX_HEADER_LIST_SIZE` (16 KiB)
//! with a bare `431` and `REFUSED_STREAM`, or, for a block spread over CONTINUATION frames past
//! that bound, with `GOAWAY` on the whole connection (its guard against CONTINUATION floods).
//! Those have no body to put JSON in; docs/api.md says so.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::leadership::ErrorBody;

/// Longest error text [`json_errors`] reads from a plain answer, in bytes; longer text is cut.
/// axum's rejection messages are well under it.
pub const MAX_PLAIN_ERROR_BYTES: usize = 4096;

/// Largest request header section the router takes, in bytes, counted as HTTP/2 does (name,
/// value and 32 bytes per field); larger ones get a JSON `431`. Half of hyper's HTTP/2 default
/// (16 KiB), so the JSON answer comes first; the largest legitimate header, a token, is at most
/// [`crate::tokens::MAX_TOKEN_BYTES`] (4 KiB).
pub const MAX_REQUEST_HEADER_BYTES: usize = 8 * 1024;

/// Whether `headers` declare a JSON body (`application/json`, with or without parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// An error answer in the JSON form.
pub fn json_error(status: StatusCode, error: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: error.into(),
        }),
    )
        .into_response()
}

/// The layer: every 4xx or 5xx answer that is not JSON already (nor a gRPC answer, which is
/// HTTP 200) is rewritten as `{"error": <its text>}`; an empty text becomes the status's
/// reason phrase.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if header_bytes > MAX_REQUEST_HEADER_BYTES {
        return json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers of {header_bytes} bytes (name, value and 32 per field), over \
                 the limit of {MAX_REQUEST_HEADER_BYTES}"
            ),
        );
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        // Longer than the bound, or the body failed: the status says enough.
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_lowercase)
    } else {
        text
    };
    // The body serializes a plain struct of one string: it cannot fail.
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The router's answer to a path it does not serve (reached only by a caller holding
/// `mesh.admin`: authorization answers everyone else first, see [`super::auth`]).
pub async fn no_route(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", cut(uri.path())),
    )
}

/// The router's answer to a served path asked with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", cut(uri.path())),
    )
}

/// A client-chosen path, cut for an error message.
fn cut(path: &str) -> &str {
    let mut end = path.len().min(super::audit::MAX_AUDITED_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(
        dead_code,
        reason = "only its shape matters: the extractor's rejections"
    )]
    struct Shape {
        to: u64,
    }

    async fn answer(request: Request) -> (StatusCode, HeaderMap, serde_json::Value) {
        let app = Router::new()
            .route("/json", post(|_: axum::Json<Shape>| async { "ok" }))
            .route(
                "/plain",
                post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "driver stopped\n") }),
            )
            .route("/empty", post(|| async { StatusCode::BAD_GATEWAY }))
            .layer(axum::extract::DefaultBodyLimit::max(64))
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(json_errors));
        let response = app.oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, headers, json)
    }

    fn post_json(path: &str, content_type: Option<&str>, body: &str) -> Request {
        let mut request = Request::post(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    /// Security review: axum's rejections (400, 413, 415, 422) were plain text and the
    /// router's 404/405 empty. Each is now `{"error": ..}` with its status kept.
    #[tokio::test]
    async fn every_rejection_is_in_the_json_form() {
        let json = Some("application/json");
        let cases = [
            (post_json("/json", json, "{"), StatusCode::BAD_REQUEST),
            (
                post_json("/json", json, &format!("{{\"to\": 1{}}}", " ".repeat(100))),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                post_json("/json", None, "{\"to\": 1}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                post_json("/json", json, "{\"to\": \"x\"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                post_json("/json", json, "{\"to\": 1, \"force\": true}"),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (post_json("/nowhere", None, ""), StatusCode::NOT_FOUND),
            (
                Request::get("/json").body(Body::empty()).unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                post_json("/plain", None, ""),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (post_json("/empty", None, ""), StatusCode::BAD_GATEWAY),
            (
                Request::post("/json")
                    .header("x-padding", "x".repeat(MAX_REQUEST_HEADER_BYTES))
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
        ];
        for (request, expected) in cases {
            let what = format!("{} {}", request.method(), request.uri());
            let (status, headers, body) = answer(request).await;
            assert_eq!(status, expected, "{what}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "{what}: {body}");
            assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
        }
        let (_, _, body) = answer(post_json("/json", json, "{\"to\": 1, \"force\": true}")).await;
        assert!(
            body["error"].as_str().unwrap().contains("unknown field"),
            "{body}"
        );
        let (_, _, body) = answer(post_json("/plain", None, "")).await;
        assert_eq!(body["error"], "driver stopped");
        // A good request still passes, untouched.
        let app = Router::new()
            .route("/json", post(|_: axum::Json<Shape>| async { "ok" }))
            .layer(axum::middleware::from_fn(json_errors));
        let response = app
            .oneshot(post_json("/json", json, "{\"to\": 1}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

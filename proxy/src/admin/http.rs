//! The two small HTTP/1.1 servers (hyper): metrics (`/metrics`, `/proxyMode`)
//! and health (`/healthz`, `/livez`).
//!
//! Each request is answered from in-memory state (and, for `/metrics`, the
//! read-only map handles), so a slow or hostile client can hold at most a
//! connection: headers must arrive within [`crate::config::HTTP_HEADER_TIMEOUT`],
//! and at most [`crate::config::HTTP_MAX_CONNECTIONS`] are served at once per
//! server, a new one closing the oldest (the accept loop is
//! [`crate::http_server`]'s, shared with the health-check node ports).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    http_server,
    telemetry::{Telemetry, health::Probe, metrics},
};

/// Which endpoints a server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Metrics,
    Health,
}

impl Site {
    pub fn describe(self) -> &'static str {
        match self {
            Site::Metrics => "metrics",
            Site::Health => "health checks",
        }
    }

    /// The `server` label of `proxy_health_bind_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Site::Metrics => "metrics",
            Site::Health => "healthz",
        }
    }
}

/// Accepts and serves until `stop` flips; then drops every open connection
/// (the loop is [`crate::http_server::serve`]'s).
pub async fn serve(
    listener: TcpListener,
    site: Site,
    telemetry: Telemetry,
    stop: watch::Receiver<bool>,
) {
    let handler = move |req: Request<Incoming>| {
        let telemetry = telemetry.clone();
        async move { route(site, &telemetry, req).await }
    };
    http_server::serve(listener, site.describe(), handler, stop).await;
}

async fn route<B>(site: Site, telemetry: &Telemetry, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    match (site, req.uri().path()) {
        (Site::Metrics, "/metrics") => metrics_page(telemetry).await,
        (Site::Metrics, "/proxyMode") => text(StatusCode::OK, telemetry.mode().as_str()),
        (Site::Health, "/healthz") => health_page(telemetry, Probe::Healthz),
        (Site::Health, "/livez") => health_page(telemetry, Probe::Livez),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

async fn metrics_page(telemetry: &Telemetry) -> Response<Full<Bytes>> {
    let t = telemetry.clone();
    // Encoding may walk the LRU maps (one syscall per entry): not on a worker.
    match tokio::task::spawn_blocking(move || t.metrics().encode()).await {
        Ok(Ok(body)) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Ok(Err(_)) | Err(_) => {
            tracing::error!("encoding the metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
        }
    }
}

fn health_page(telemetry: &Telemetry, probe: Probe) -> Response<Full<Bytes>> {
    let (code, body) = telemetry.probe(probe);
    let json = match serde_json::to_vec(&body) {
        Ok(json) => json,
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

use crate::http_server::text;

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use std::time::Duration;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::telemetry::Mode;

    async fn get(site: Site, t: &Telemetry, path: &str) -> (u16, String) {
        let req = Request::get(path).body(()).unwrap();
        let resp = route(site, t, req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn routes_answer_what_kube_proxy_serves() {
        let t = Telemetry::new(Mode::Ebpf, Duration::from_secs(60));
        let (code, body) = get(Site::Metrics, &t, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram"),
            "{body}"
        );
        assert_eq!(
            get(Site::Metrics, &t, "/proxyMode").await,
            (200, "ebpf".into())
        );
        assert_eq!(get(Site::Metrics, &t, "/healthz").await.0, 404);
        let (code, body) = get(Site::Health, &t, "/healthz").await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""healthy":true"#), "{body}");
        assert_eq!(get(Site::Health, &t, "/livez").await.0, 200);
        assert_eq!(get(Site::Health, &t, "/metrics").await.0, 404);
        // The probe itself is counted, as kube-proxy does.
        let (_, body) = get(Site::Metrics, &t, "/metrics").await;
        assert!(
            body.contains(r#"kubeproxy_proxy_healthz_total{code="200"} 1"#),
            "{body}"
        );
    }
}

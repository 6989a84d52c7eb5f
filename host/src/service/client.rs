//! A client of the service's JSON API (the CLI's `frostgate request`, the benchmarks): HTTP/1.1
//! over plain TCP (`http://`, development) or mutual TLS (`https://`, the service's certificate
//! pinned), its connection kept open between calls (a clone opens its own).

use crate::api::tls::TlsFiles;
use frostgate_common::error::{Error, ErrorCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One service, by URL.
#[derive(Debug)]
pub struct ServiceClient {
    host: String,
    authority: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The connection kept open after a call (HTTP/1.1: one call at a time on it).
    kept: tokio::sync::Mutex<Option<Sender>>,
}

impl Clone for ServiceClient {
    /// The same service, on a connection of its own.
    fn clone(&self) -> Self {
        ServiceClient {
            host: self.host.clone(),
            authority: self.authority.clone(),
            tls: self.tls.clone(),
            kept: tokio::sync::Mutex::new(None),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::NodeUnavailable, format!("service: {e}"))
}

impl ServiceClient {
    /// A client of `url` (`http://HOST:PORT` or `https://HOST:PORT`; TLS needs `tls`).
    pub fn new(url: &str, tls: Option<&TlsFiles>) -> Result<ServiceClient, Error> {
        let bad = || {
            Error::new(ErrorCode::ConfigInvalid, format!("--service {url:?}: http://HOST:PORT or https://HOST:PORT"))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/').to_string();
        let host = authority.rsplit_once(':').map(|(h, _)| h.to_string()).ok_or_else(bad)?;
        let tls = match (scheme, tls) {
            ("http", _) => None,
            ("https", Some(files)) => {
                let mut config = Arc::unwrap_or_clone(crate::api::tls::client_config(files)?);
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
            ("https", None) => {
                return Err(Error::new(ErrorCode::TlsRequired, "https needs --cert, --key and --server-cert"))
            }
            _ => return Err(bad()),
        };
        Ok(ServiceClient { host, authority, tls, kept: tokio::sync::Mutex::new(None) })
    }

    /// A new connection to the service.
    async fn connect(&self) -> Result<Sender, Error> {
        let tcp = tokio::net::TcpStream::connect(&self.authority).await.map_err(unavailable)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("service host: {e}")))?;
                let tls =
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(unavailable)?;
                handshake(hyper_util::rt::TokioIo::new(tls)).await
            }
        }
    }

    /// Sends one request; answers the status and the JSON body. On the kept connection when it
    /// is open; a request it could not take (closed meanwhile) goes once more on a new one.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), Error> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let mut kept = self.kept.lock().await;
        let reusable = match kept.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match reusable {
            Some(s) => s,
            None => self.connect().await?,
        };
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // Never written: the kept connection had closed. Once more, on a new one.
                Some(again) => {
                    sender = self.connect().await?;
                    sender.send_request(again).await.map_err(unavailable)?
                }
                None => return Err(unavailable(e.into_error())),
            },
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(unavailable)?.to_bytes();
        *kept = Some(sender);
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }

    /// As [`call`](Self::call), an error status answered as the error its body names.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let (status, value) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().and_then(ErrorCode::from_code).unwrap_or(ErrorCode::Internal);
        let message = value["error"]["message"].as_str().unwrap_or("no message").to_string();
        Err(Error::new(code, format!("HTTP {status}: {message}")))
    }
}

async fn handshake<T>(io: T) -> Result<Sender, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(unavailable)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

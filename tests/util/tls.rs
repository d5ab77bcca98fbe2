//! A private TLS world for trust-root and proxy tests: a throwaway CA made
//! in the test, a TLS terminator with a certificate from it in front of the
//! emulated issuer, and an HTTP CONNECT proxy, all on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a server configuration with a certificate it signed.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A new CA and a leaf certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ce-auth test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("server config");
        TestCa {
            pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).expect("write CA");
        p
    }
}

/// A TLS terminator on 127.0.0.1 relaying each connection to `upstream`.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// Connections whose handshake succeeded, and those that failed.
    pub handshakes: Arc<Mutex<(u32, u32)>>,
    _rt: tokio::runtime::Runtime,
}

impl TlsFront {
    pub fn start(ca: &TestCa, upstream: SocketAddr) -> TlsFront {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind TLS front");
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&ca.server));
        let handshakes = Arc::new(Mutex::new((0, 0)));
        let counts = Arc::clone(&handshakes);
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        counts.lock().unwrap().1 += 1;
                        return;
                    };
                    counts.lock().unwrap().0 += 1;
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            handshakes,
            _rt: rt,
        }
    }
}

/// The `Proxy-Authorization` value a client sends for `user` and `password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// What a [`ConnectProxy`] was asked, one entry per connection.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// The request line, e.g. `CONNECT auth.example.test:443 HTTP/1.1`.
    pub line: String,
    /// The `Proxy-Authorization` header, if sent.
    pub authorization: Option<String>,
}

/// An HTTP CONNECT proxy on 127.0.0.1 that tunnels every CONNECT to `target`
/// whatever host it names (so a "remote" host name needs no DNS), and
/// answers anything else with 502.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<ProxyRequest>>>,
    _rt: tokio::runtime::Runtime,
}

impl ConnectProxy {
    pub fn start(target: SocketAddr) -> ConnectProxy {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        rt.spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let Some((req, rest)) = read_head(&mut tcp).await else {
                        return;
                    };
                    let connect = req.line.starts_with("CONNECT ");
                    log.lock().unwrap().push(req);
                    if !connect {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut up) = TcpStream::connect(target).await else {
                        return;
                    };
                    if tcp
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                        || up.write_all(&rest).await.is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                });
            }
        });
        ConnectProxy {
            addr,
            requests,
            _rt: rt,
        }
    }

    /// What it has been asked so far.
    pub fn seen(&self) -> Vec<ProxyRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads a request head (at most 16 KiB) and parses it with httparse;
/// returns it and any bytes read past it.
async fn read_head(tcp: &mut TcpStream) -> Option<(ProxyRequest, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            let line = format!(
                "{} {} HTTP/1.{}",
                req.method.unwrap_or_default(),
                req.path.unwrap_or_default(),
                req.version.unwrap_or(1)
            );
            let authorization = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                .map(|h| String::from_utf8_lossy(h.value).to_string());
            return Some((
                ProxyRequest {
                    line,
                    authorization,
                },
                buf[len..].to_vec(),
            ));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

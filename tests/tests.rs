//! The integration tests, one module per area, in one binary so that the
//! library and its dependencies are linked once.

mod util;

mod abuse;
mod abuse_more;
mod bench_smoke;
mod client_e2e;
mod daemon;
mod engine_issuer;
mod engine_schedule;
mod faults;
mod framing_props;
mod git_credential;
mod issuer;
mod issuer_cli;
mod leaks;
mod lifecycle_faults;
mod lifecycle_hardening;
mod oauth_issuer;
mod protocol_doc;
mod proxy;
mod python_example;
mod security_memlock;
mod security_socket;
mod server;
mod server_throughput;
mod systemd_units;
mod trust_and_proxies;

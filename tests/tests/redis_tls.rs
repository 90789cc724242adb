//! `rediss://` against a private redis-server that speaks TLS only, with a
//! throwaway CA made at test time: trusting that CA, the broker works (the
//! shared connection and a blocking read's own one); not trusting it, the
//! connection fails fast as a connection error; a password in a `rediss://`
//! URL authenticates and never shows; mutual TLS presents the client
//! certificate; unusable certificates are invalid arguments.

use std::error::Error as _;
use std::time::Duration;

use crewq_core::{Broker, Error, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_server::{ServerTls, TestRedis};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The default user's password on the servers that need one.
const PASSWORD: &str = "tls-s3cret-4b1d";

/// Far more than a refused TLS handshake takes, far less than a hang.
const FAIL_WITHIN: Duration = Duration::from_secs(20);

/// A throwaway certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], and its key, as PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (IP addresses or DNS names) usable as `usage`.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "crewq test");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn server_cert(&self) -> Issued {
        self.issue(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client_cert(&self) -> Issued {
        self.issue(&["crewq-client"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A TLS-only server with a certificate from `ca`, which also signs the
/// client certificates it accepts.
fn tls_server(ca: &Ca, require_client_cert: bool, args: &[&str]) -> TestRedis {
    let server = ca.server_cert();
    let tls = ServerTls {
        cert_pem: server.cert_pem,
        key_pem: server.key_pem,
        client_ca_pem: ca.pem.clone(),
        require_client_cert,
    };
    TestRedis::start_tls(&tls, args)
}

fn port_of(server: &TestRedis) -> u16 {
    server.port().expect("a private server")
}

fn entry(stream: &str, n: u32) -> NewEntry {
    NewEntry::new(stream, Fields::new().with("n", n.to_string()))
}

/// Connects, failing the test if that takes longer than [`FAIL_WITHIN`].
async fn connect(config: RedisConfig) -> crewq_core::Result<RedisBroker> {
    match tokio::time::timeout(FAIL_WITHIN, config.connect()).await {
        Ok(connected) => connected,
        Err(_) => panic!("connecting hung for {FAIL_WITHIN:?}"),
    }
}

/// The error and all its sources, for matching on what rustls said.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(" <- ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Appends, reads back in a group (blocking, on a dedicated connection) and
/// acknowledges one entry.
async fn round_trip(broker: &RedisBroker, stream: &str) {
    broker
        .group_create(stream, "crew", GroupStart::BEGINNING, true)
        .await
        .expect("XGROUP CREATE");
    let id = broker.xadd(entry(stream, 7)).await.expect("XADD");
    let read = ReadGroup::new(stream, "crew", "worker-1").block(Duration::from_secs(2));
    let delivered = broker.read_group(&read).await.expect("XREADGROUP BLOCK");
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].id, id);
    let fields = delivered[0].fields.as_ref().expect("not deleted");
    assert_eq!(fields.get_str("n"), Some("7"));
    assert_eq!(broker.ack(stream, "crew", &[id]).await.expect("XACK"), 1);
    let pending = broker
        .pending_summary(stream, "crew")
        .await
        .expect("XPENDING");
    assert_eq!(pending.count, 0, "{pending:?}");
}

#[tokio::test]
async fn a_broker_trusting_the_private_ca_round_trips_over_tls() {
    let ca = Ca::new("crewq test CA");
    let server = tls_server(&ca, false, &[]);
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let broker = connect(RedisConfig::new(server.url()).tls_root_ca_pem(ca.pem.as_str()))
        .await
        .expect("TLS connection trusting the test CA");
    round_trip(&broker, "tls:tasks").await;
    // The blocking read above went over a TLS connection of its own.
    assert_eq!(broker.idle_blocking_connections(), 1);
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_an_auth_error() {
    let ca = Ca::new("crewq test CA");
    let server = tls_server(&ca, false, &[]);
    let other_ca = Ca::new("some other CA");
    let untrusted = [
        ("the platform's roots", RedisConfig::new(server.url())),
        (
            "another private CA",
            RedisConfig::new(server.url()).tls_root_ca_pem(other_ca.pem.as_str()),
        ),
    ];
    for (trusting, config) in untrusted {
        // Default retries: a refused certificate fails at once, not after
        // the reconnection back-off, and is not worth retrying.
        let err = connect(config)
            .await
            .expect_err("the server's certificate is not trusted");
        assert_eq!(err.kind(), ErrorKind::Auth, "{trusting}: {err:?}");
        assert!(!err.is_transient(), "{trusting}: {err:?}");
        assert!(err.source().is_some(), "{trusting}: no source: {err:?}");
        let text = chain(&err);
        assert!(
            text.contains("certificate") && text.contains("UnknownIssuer"),
            "{trusting}: {text}"
        );
    }
}

#[tokio::test]
async fn a_password_in_a_rediss_url_authenticates_and_never_shows() {
    let ca = Ca::new("crewq test CA");
    let server = tls_server(&ca, false, &["--requirepass", PASSWORD]);
    let port = port_of(&server);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}/0");
    let config = RedisConfig::new(url.as_str()).tls_root_ca_pem(ca.pem.as_str());
    let broker = connect(config.clone()).await.expect("authenticated");
    broker.xadd(entry("tls:auth", 1)).await.expect("XADD");
    assert_eq!(broker.xlen("tls:auth").await.expect("XLEN"), 1);

    assert_eq!(
        broker.redacted_url(),
        format!("rediss://:***@127.0.0.1:{port}/0")
    );
    for shown in [
        format!("{broker:?}"),
        format!("{broker}"),
        format!("{config:?}"),
        config.redacted_url(),
    ] {
        assert!(!shown.contains(PASSWORD), "password shown: {shown}");
        assert!(shown.contains("rediss://:***@"), "{shown}");
    }

    let wrong = format!("rediss://:not-{PASSWORD}@127.0.0.1:{port}/0");
    let err = connect(RedisConfig::new(wrong.as_str()).tls_root_ca_pem(ca.pem.as_str()))
        .await
        .expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(!chain(&err).contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let ca = Ca::new("crewq test CA");
    let server = tls_server(&ca, true, &[]);
    let client = ca.client_cert();
    let broker = connect(
        RedisConfig::new(server.url())
            .tls_root_ca_pem(ca.pem.as_str())
            .tls_client_cert_pem(client.cert_pem.as_str(), client.key_pem.as_str()),
    )
    .await
    .expect("the server accepts the client certificate");
    round_trip(&broker, "mtls:tasks").await;

    let err = connect(RedisConfig::new(server.url()).tls_root_ca_pem(ca.pem.as_str()))
        .await
        .expect_err("the server wants a client certificate");
    assert_eq!(err.kind(), ErrorKind::Auth, "{}", chain(&err));
}

#[tokio::test]
async fn unusable_tls_certificates_are_invalid_arguments() {
    let ca = Ca::new("crewq test CA");
    let client = ca.client_cert();
    let other = ca.client_cert();
    // No server: every case fails before connecting (port 9 is discard).
    let url = "rediss://127.0.0.1:9/";
    let cases = [
        (
            "a CA that is not PEM",
            RedisConfig::new(url).tls_root_ca_pem("not a certificate"),
        ),
        (
            "a CA PEM holding only a key",
            RedisConfig::new(url).tls_root_ca_pem(client.key_pem.as_str()),
        ),
        (
            "a client key that is not PEM",
            RedisConfig::new(url).tls_client_cert_pem(client.cert_pem.as_str(), "not a key"),
        ),
        (
            "a client key of another certificate",
            RedisConfig::new(url)
                .tls_client_cert_pem(client.cert_pem.as_str(), other.key_pem.as_str()),
        ),
        (
            "a CA for a plain-text URL",
            RedisConfig::new("redis://127.0.0.1:9/").tls_root_ca_pem(ca.pem.as_str()),
        ),
    ];
    for (case, config) in cases {
        let debug = format!("{config:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{case}: {debug}");
        let err = connect(config).await.expect_err(case);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{case}: {err:?}");
    }
}

/// `redis-cli` over TLS to `server`, trusting `ca`; its stdout.
fn tls_cli(server: &TestRedis, ca: &Ca, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("write the CA");
    let output = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca_file)
        .args(["-h", "127.0.0.1", "-p", &port_of(server).to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Redis Cluster over TLS with a private CA, as on one node (issue 10):
/// a one-node cluster (`--tls-cluster yes`, every slot its own) that speaks
/// TLS only. Trusting the CA, the cluster broker works; not trusting it,
/// it fails as a connection error; a plain seed with certificates set is
/// refused before connecting.
#[tokio::test]
async fn a_cluster_speaking_tls_with_a_private_ca_works_when_trusted() {
    let ca = Ca::new("crewq cluster test CA");
    let server = tls_server(
        &ca,
        false,
        &["--cluster-enabled", "yes", "--tls-cluster", "yes"],
    );
    tls_cli(&server, &ca, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let deadline = std::time::Instant::now() + FAIL_WITHIN;
    while !tls_cli(&server, &ca, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
        assert!(
            std::time::Instant::now() < deadline,
            "the one-node cluster did not become ok"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seed = format!("rediss://127.0.0.1:{}", port_of(&server));

    let trusted = RedisConfig::new(seed.clone())
        .cluster()
        .tls_root_ca_pem(ca.pem.clone());
    let broker = connect(trusted).await.expect("connect trusting the CA");
    assert!(broker.is_cluster());
    round_trip(&broker, "{tls}:tasks").await;

    let untrusted = RedisConfig::new(seed.clone())
        .cluster()
        .connection_timeout(Duration::from_secs(2));
    match connect(untrusted).await {
        Ok(_) => panic!("connected to a cluster whose CA it does not trust"),
        Err(err) => assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Auth),
            "{}",
            chain(&err)
        ),
    }

    let plain = format!("redis://127.0.0.1:{}", port_of(&server));
    let refused = RedisConfig::new(plain)
        .cluster()
        .tls_root_ca_pem(ca.pem.clone());
    match connect(refused).await {
        Ok(_) => panic!("certificates on a plain seed were accepted"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}"),
    }
}

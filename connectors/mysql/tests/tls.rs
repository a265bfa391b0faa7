//! TLS to the test MariaDB (scripts/test-servers.sh offers TLS with a throwaway CA).
//! Runs with the `tls` feature: `cargo test -p escr-mysql --features tls --test tls`.
#![cfg(feature = "tls")]

use escr_connector::{Connector, ErrorKind, Value};
use escr_mysql::{MysqlConfig, MysqlConnector};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test servers first \
             (`source scripts/test-servers.sh && start_test_servers`)"
        )
    })
}

fn config_and_password() -> (MysqlConfig, Option<String>) {
    let opts = mysql_async::Opts::from_url(&required_env("ESCR_TEST_MYSQL_URL"))
        .expect("ESCR_TEST_MYSQL_URL is not a mysql:// URL");
    let mut config = MysqlConfig::new(
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("escr_test"),
        opts.user().unwrap_or("escr"),
    );
    config.tls = true;
    config.acquire_timeout_ms = 3000;
    (config, opts.pass().map(str::to_string))
}

#[tokio::test]
async fn tls_with_the_test_ca_is_encrypted() {
    let (mut config, password) = config_and_password();
    config.tls_ca_file = Some(required_env("ESCR_TEST_MYSQL_TLS_CA").into());
    let c = MysqlConnector::with_password(&config, password).unwrap();
    let rs = c
        .query("SHOW SESSION STATUS LIKE 'Ssl_cipher'", &[])
        .await
        .unwrap();
    match &rs.rows[0][1] {
        Value::Text(cipher) => assert!(!cipher.is_empty(), "no TLS cipher in use"),
        other => panic!("unexpected Ssl_cipher {other:?}"),
    }
}

#[tokio::test]
async fn tls_refuses_a_certificate_from_an_unknown_ca() {
    // Built-in roots only: the throwaway CA is not among them.
    let (config, password) = config_and_password();
    let c = MysqlConnector::with_password(&config, password.clone()).unwrap();
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(!e.to_string().contains(password.as_deref().unwrap_or("-")));
}

//! ACL users over real sockets: AUTH and HELLO log in as a user, NOPERM
//! names the command or key refused, ACL WHOAMI / LIST, and HTTP Basic and
//! Bearer map onto the same users.

mod common;

use common::{http, Raw, TestServer, V};
use idem_server::acl::{hash_password, UserConfig};
use idem_server::ServerConfig;

fn user(name: &str, password: &str, rules: &str) -> UserConfig {
    UserConfig { name: name.into(), password_hash: Some(hash_password(password.as_bytes())), rules: rules.into() }
}

fn config() -> ServerConfig {
    ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        users: vec![
            user("alice", "alice-pw", "on ~tenant-a:* +@idem -@admin -lock"),
            user("reader", "reader-pw", "on allkeys +@read +@connection"),
            user("root", "root-pw", "on allkeys allcommands"),
            user("gone", "gone-pw", "off allkeys allcommands"),
        ],
        ..ServerConfig::default()
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding, enough for a header in a test.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn err_text(v: &V) -> &str {
    match v {
        V::Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_and_are_refused_what_their_rules_refuse() {
    let srv = TestServer::with_store(config()).await;
    let mut c = Raw::connect(srv.addr).await;
    // No default user is configured: nothing runs before AUTH.
    assert_eq!(c.cmd(&["VALUE.GET", "tenant-a:1"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["AUTH", "alice", "wrong"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["AUTH", "gone", "gone-pw"]).await.err_code(), Some("NOAUTH"), "an `off` user cannot log in");
    assert_eq!(c.cmd(&["AUTH", "alice", "alice-pw"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, V::bulk("alice"));

    // Her keys and commands work.
    let set = c.cmd(&["VALUE.SET", "tenant-a:1", "x"]).await;
    assert!(set.err_code().is_none(), "{set:?}");
    // Another tenant's key: NOPERM naming the key, nothing changed.
    let other = c.cmd(&["VALUE.SET", "tenant-b:1", "x"]).await;
    assert_eq!(other.err_code(), Some("NOPERM"));
    assert!(err_text(&other).contains("'tenant-b:1'"), "{other:?}");
    // CLAIM.ALL: every key is checked.
    let all = c.cmd(&["CLAIM.ALL", "me", "tenant-a:x", "tenant-b:y"]).await;
    assert!(err_text(&all).contains("'tenant-b:y'"), "{all:?}");
    // A refused command: NOPERM naming the command.
    let lock = c.cmd(&["LOCK", "tenant-a:l", "me", "LEASE", "1000"]).await;
    assert_eq!(lock.err_code(), Some("NOPERM"));
    assert!(err_text(&lock).contains("'lock'"), "{lock:?}");
    let info = c.cmd(&["INFO"]).await;
    assert!(err_text(&info).contains("'info'"), "{info:?}");
    assert!(err_text(&c.cmd(&["ACL", "LIST"]).await).starts_with("NOPERM"));
    // Not in @idem, and @connection was not granted.
    assert_eq!(c.cmd(&["PING"]).await.err_code(), Some("NOPERM"));

    // The root user sees the rules, passwords only as hashes.
    let mut r = Raw::connect(srv.addr).await;
    let hello = r.cmd(&["HELLO", "3", "AUTH", "root", "root-pw"]).await;
    assert!(matches!(hello, V::Map(_)), "{hello:?}");
    assert_eq!(r.cmd(&["ACL", "WHOAMI"]).await, V::bulk("root"));
    let list = r.cmd(&["ACL", "LIST"]).await;
    let lines: Vec<String> = list
        .as_array()
        .iter()
        .map(|v| match v {
            V::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let alice = lines.iter().find(|l| l.starts_with("user alice ")).expect("alice listed");
    assert!(alice.contains(&format!("#{}", hash_password(b"alice-pw"))), "{alice}");
    assert!(alice.contains("~tenant-a:*"), "{alice}");
    assert!(!lines.iter().any(|l| l.contains("-pw")), "no password in clear: {lines:?}");
    // root reads tenant-a's value.
    let got = r.cmd(&["VALUE.GET", "tenant-a:1"]).await;
    assert!(matches!(&got, V::Array(a) if a[0] == V::bulk("x")), "{got:?}");

    // The reader may read but not write.
    let mut d = Raw::connect(srv.addr).await;
    assert_eq!(d.cmd(&["AUTH", "reader", "reader-pw"]).await, V::Simple("OK".into()));
    assert_eq!(d.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert!(d.cmd(&["VALUE.GET", "tenant-b:1"]).await.err_code().is_none());
    assert_eq!(d.cmd(&["VALUE.SET", "tenant-b:1", "y"]).await.err_code(), Some("NOPERM"));
    // Nothing was written by the refused commands.
    assert_eq!(r.cmd(&["VALUE.GET", "tenant-b:1"]).await, V::Nil);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_and_bearer_map_onto_the_same_users() {
    let srv = TestServer::with_store(config()).await;
    let h = srv.http.unwrap();
    let set = br#"["VALUE.SET","tenant-a:h","v"]"#;
    let (status, _, _) = http(h, "POST", "/v1/command", &[], set).await;
    assert_eq!(status, 401, "no credentials");
    let bearer = [("Authorization", "Bearer alice-pw")];
    let (status, _, body) = http(h, "POST", "/v1/command", &bearer, set).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(h, "POST", "/v1/command", &bearer, br#"["VALUE.SET","tenant-b:h","v"]"#).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("tenant-b:h"), "{}", String::from_utf8_lossy(&body));
    // Basic with the user's name and password; a wrong pair is refused.
    let alice = basic("alice", "alice-pw");
    let (status, _, _) = http(h, "GET", "/v1/values/tenant-a:h", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(h, "GET", "/v1/values/tenant-b:h", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 403, "the REST API checks key patterns");
    let wrong = basic("reader", "alice-pw");
    let (status, _, _) = http(h, "GET", "/v1/values/tenant-a:h", &[("Authorization", &wrong)], b"").await;
    assert_eq!(status, 401);
    // /metrics and /ui need the rights of INFO (@admin).
    let (status, _, _) = http(h, "GET", "/metrics", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 403);
    let (status, _, _) = http(h, "GET", "/ui", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 403);
    let (status, _, _) = http(h, "GET", "/metrics", &[("Authorization", "Bearer root-pw")], b"").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(h, "GET", "/v1/inspect/tenant-b:h", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 403);
    let (status, _, _) = http(h, "GET", "/v1/inspect/tenant-a:h", &[("Authorization", &alice)], b"").await;
    assert_eq!(status, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_the_default_user_beside_acl_users() {
    let config = ServerConfig { password: Some("legacy".into()), ..config() };
    let srv = TestServer::with_store(config).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["AUTH", "legacy"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, V::bulk("default"));
    assert!(c.cmd(&["INFO"]).await.err_code().is_none(), "default has every right");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nopass_default_user_serves_connections_that_never_auth() {
    let mut config = config();
    config.users.push(UserConfig {
        name: "default".into(),
        password_hash: None,
        rules: "on nopass ~public:* +@read".into(),
    });
    let srv = TestServer::with_store(config).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, V::bulk("default"));
    assert!(c.cmd(&["VALUE.GET", "public:1"]).await.err_code().is_none());
    assert_eq!(c.cmd(&["VALUE.GET", "tenant-a:1"]).await.err_code(), Some("NOPERM"));
    assert_eq!(c.cmd(&["VALUE.SET", "public:1", "x"]).await.err_code(), Some("NOPERM"));
    let (status, _, _) = http(srv.http.unwrap(), "GET", "/v1/values/public:1", &[], b"").await;
    assert_eq!(status, 200, "HTTP without credentials is the default user too");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_acl_whoami_and_list_show_the_default_user() {
    let srv = TestServer::with_store(ServerConfig::default()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, V::bulk("default"));
    assert_eq!(c.cmd(&["ACL", "LIST"]).await, V::Array(vec![V::bulk("user default on nopass ~* +@all")]));
    assert_eq!(c.cmd(&["ACL", "NOPE"]).await.err_code(), Some("ERR"));
    srv.stop().await;
}

#[tokio::test]
async fn bad_users_are_refused_at_bind() {
    for rules in ["+@nosuch", "~", "#123", "frobnicate"] {
        let config = ServerConfig { users: vec![user("u", "pw", rules)], ..ServerConfig::default() };
        let err = idem_server::Server::bind(ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..config })
            .await
            .expect_err(rules)
            .to_string();
        assert!(err.contains("user 'u'"), "{rules}: {err}");
    }
    let shared = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        users: vec![user("a", "same", "on"), user("b", "same", "on")],
        ..ServerConfig::default()
    };
    assert!(idem_server::Server::bind(shared).await.is_err(), "two users may not share a password");
}

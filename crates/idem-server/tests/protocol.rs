//! The RESP front end through real sockets, against a test-only backend:
//! server commands, framing, pipelining order, authentication, bounds that
//! keep the connection usable, connection limit, idle timeout, shutdown.

mod common;

use std::sync::atomic::Ordering;

use common::{encode_cmd, Raw, TestBackend, TestServer, V};
use idem_server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_echo_and_inline() {
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi there"]).await, V::bulk("hi there"));
    assert_eq!(c.cmd(&["ECHO", "x\r\ny"]).await, V::bulk("x\r\ny"));
    // Inline, as typed at telnet, with quotes.
    c.send(b"PING\r\n").await;
    assert_eq!(c.read().await, Some(V::Simple("PONG".into())));
    c.send(b"echo \"two words\"\n").await;
    assert_eq!(c.read().await, Some(V::bulk("two words")));
    // Blank lines and empty arrays get no reply.
    c.send(b"\r\n*0\r\nPING\r\n").await;
    assert_eq!(c.read().await, Some(V::Simple("PONG".into())));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_connection_usable() {
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    let unknown = c.cmd(&["NOSUCH", "a"]).await;
    assert_eq!(unknown.err_code(), Some("ERR"), "{unknown:?}");
    assert_eq!(c.cmd(&["IDEM.BEGIN"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["ECHO"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["IDEM.BEGIN", "k", "LEASE", "abc"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["SELECT", "1"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["CLIENT", "NOPE"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["HELLO", "4"]).await.err_code(), Some("NOPROTO"));
    // A backend error reply carries its code.
    assert_eq!(c.cmd(&["IDEM.ABORT", "stale", "1"]).await.err_code(), Some("STALE"));
    // A value just over value_bytes_max passes framing (bulk_bytes_max is
    // larger) and gets the command parser's LIMIT error.
    let big = "v".repeat(1024 * 1024 + 1);
    let e = c.cmd(&["VALUE.SET", "k", &big]).await;
    assert_eq!(e.err_code(), Some("LIMIT"), "{e:?}");
    // A key over 512 bytes: LIMIT too.
    assert_eq!(c.cmd(&["IDEM.GET", &"k".repeat(513)]).await.err_code(), Some("LIMIT"));
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_commands() {
    let backend = TestBackend::new();
    let srv = TestServer::start(ServerConfig::default(), backend.clone()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["SELECT", "0"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["DBSIZE"]).await, V::Int(42));
    let id = match c.cmd(&["CLIENT", "ID"]).await {
        V::Int(n) => n,
        other => panic!("{other:?}"),
    };
    assert!(id > 0);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, V::Nil);
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, V::bulk("worker-1"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "has space"]).await.err_code(), Some("ERR"));
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "x"]).await, V::Simple("OK".into()));

    let info = match c.cmd(&["INFO"]).await {
        V::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    for needle in [
        "# Server",
        "idem_version:",
        "event_loops:",
        "# Clients",
        "connected_clients:",
        "# Stats",
        "# Store",
        "test_field:1",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    let only = match c.cmd(&["INFO", "clients"]).await {
        V::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(only.contains("connected_clients:") && !only.contains("# Server"), "{only}");

    let count = match c.cmd(&["COMMAND", "COUNT"]).await {
        V::Int(n) => n,
        other => panic!("{other:?}"),
    };
    let all = c.cmd(&["COMMAND"]).await;
    assert_eq!(all.as_array().len() as i64, count);
    assert!(count >= 24 + 10);
    let info = c.cmd(&["COMMAND", "INFO", "idem.begin", "nosuch"]).await;
    let entries = info.as_array();
    assert_eq!(entries[0].as_array()[0], V::bulk("idem.begin"));
    assert_eq!(entries[0].as_array()[1], V::Int(-2));
    assert_eq!(entries[1], V::Nil);
    assert_eq!(c.cmd(&["COMMAND", "DOCS"]).await, V::Array(vec![]));

    // HELLO in RESP2: a flat array of fields and values.
    let hello = c.cmd(&["HELLO"]).await;
    let h = hello.as_array();
    assert_eq!(h[0], V::bulk("server"));
    assert_eq!(h[1], V::bulk("idem"));
    assert!(h.contains(&V::bulk("proto")) && h.contains(&V::Int(2)));
    assert!(h.contains(&V::bulk("mode")) && h.contains(&V::bulk("standalone")));

    // QUIT: OK, then the server closes.
    assert_eq!(c.cmd(&["QUIT"]).await, V::Simple("OK".into()));
    assert_eq!(c.read().await, None);
    srv.stop().await;
    assert!(backend.shut_down.load(Ordering::SeqCst), "run() calls backend.shutdown()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_after_hello_3() {
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    let hello = c.cmd(&["HELLO", "3", "SETNAME", "r3"]).await;
    let V::Map(pairs) = hello else { panic!("HELLO 3 replies a map, got {hello:?}") };
    assert!(pairs.contains(&(V::bulk("proto"), V::Int(3))));
    assert!(pairs.contains(&(V::bulk("role"), V::bulk("master"))));
    assert!(pairs.contains(&(V::bulk("modules"), V::Array(vec![]))));
    // Nil is `_` now; arrays stay arrays (status words are bulk strings).
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, V::bulk("r3"));
    c.send(&encode_cmd(&[b"CLIENT", b"SETNAME", b""])).await;
    assert_eq!(c.read().await, Some(V::Simple("OK".into())));
    c.send(&encode_cmd(&[b"CLIENT", b"GETNAME"])).await;
    assert_eq!(c.read().await, Some(V::Nil));
    let r = c.cmd(&["IDEM.GET", "k"]).await;
    assert_eq!(r, V::Array(vec![V::bulk("echo"), V::bulk("IDEM.GET"), V::Int(1)]));
    assert_eq!(c.cmd(&["COMMAND", "DOCS"]).await, V::Map(vec![]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_keeps_order_and_splits_around_server_commands() {
    let backend = TestBackend::new();
    let srv = TestServer::start(ServerConfig::default(), backend.clone()).await;
    let mut c = Raw::connect(srv.addr).await;
    let mut pipe = Vec::new();
    for args in [
        &[&b"IDEM.GET"[..], b"a"][..],
        &[b"COUNTER.GET", b"b"],
        &[b"PING"],
        &[b"NOSUCH"],
        &[b"OWNER", b"c"],
        &[b"HELLO", b"3"],
        &[b"FSM.GET", b"d"],
        &[b"SLOTS.GET", b"e"],
        &[b"ECHO", b"last"],
    ] {
        pipe.extend(encode_cmd(args));
    }
    // One write, so the server finds every request in one read.
    c.send(&pipe).await;
    let echo = |name: &str, n: i64| V::Array(vec![V::bulk("echo"), V::bulk(name), V::Int(n)]);
    assert_eq!(c.read().await, Some(echo("IDEM.GET", 2)));
    assert_eq!(c.read().await, Some(echo("COUNTER.GET", 2)));
    assert_eq!(c.read().await, Some(V::Simple("PONG".into())));
    assert_eq!(c.read().await.unwrap().err_code(), Some("ERR"));
    assert_eq!(c.read().await, Some(echo("OWNER", 1)));
    assert!(matches!(c.read().await, Some(V::Map(_))), "HELLO 3 answers in RESP3, as Redis does");
    assert_eq!(c.read().await, Some(echo("FSM.GET", 2)));
    assert_eq!(c.read().await, Some(echo("SLOTS.GET", 2)));
    assert_eq!(c.read().await, Some(V::bulk("last")));
    assert_eq!(backend.batch_sizes(), vec![2, 1, 2]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_pipeline_is_answered_completely() {
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    // More than batch_commands_max, more than one read, more than one write chunk.
    let n = 5000;
    let mut pipe = Vec::new();
    for i in 0..n {
        pipe.extend(encode_cmd(&[b"ECHO", format!("m{i}").as_bytes()]));
    }
    c.send(&pipe).await;
    for i in 0..n {
        assert_eq!(c.read().await, Some(V::bulk(&format!("m{i}"))));
    }
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_gates_everything_but_auth() {
    let config = ServerConfig { password: Some("s3cret".into()), ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["PING"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["IDEM.GET", "k"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["HELLO", "3"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["AUTH", "wrong"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["AUTH", "someone", "s3cret"]).await.err_code(), Some("NOAUTH"));
    // Before authentication, requests are bounded by the small query buffer.
    let mut big = Raw::connect(srv.addr).await;
    big.send(b"*2\r\n$4\r\nECHO\r\n$20000\r\n").await;
    let seen = big.read_until_closed().await;
    assert!(matches!(seen.as_slice(), [V::Err(e)] if e.starts_with("ERR Protocol error")), "{seen:?}");

    assert_eq!(c.cmd(&["AUTH", "s3cret"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    // After authentication the full bound applies.
    let payload = "p".repeat(20_000);
    assert_eq!(c.cmd(&["ECHO", &payload]).await, V::bulk(&payload));

    // AUTH inside HELLO, and AUTH default <password>.
    let mut h = Raw::connect(srv.addr).await;
    let hello = h.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]).await;
    assert!(matches!(hello, V::Map(_)), "{hello:?}");
    assert_eq!(h.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let mut d = Raw::connect(srv.addr).await;
    assert_eq!(d.cmd(&["AUTH", "default", "s3cret"]).await, V::Simple("OK".into()));

    // A pipelined AUTH applies to the commands after it.
    let mut p = Raw::connect(srv.addr).await;
    let mut pipe = encode_cmd(&[b"IDEM.GET", b"x"]);
    pipe.extend(encode_cmd(&[b"AUTH", b"s3cret"]));
    pipe.extend(encode_cmd(&[b"IDEM.GET", b"x"]));
    p.send(&pipe).await;
    assert_eq!(p.read().await.unwrap().err_code(), Some("NOAUTH"));
    assert_eq!(p.read().await, Some(V::Simple("OK".into())));
    assert!(matches!(p.read().await, Some(V::Array(_))));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_password_configured_is_an_error() {
    let srv = TestServer::start(ServerConfig::default(), TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["AUTH", "x"]).await.err_code(), Some("ERR"));
    // The default user takes any password, as in Redis without requirepass.
    assert_eq!(c.cmd(&["AUTH", "default", "x"]).await, V::Simple("OK".into()));
    assert!(matches!(c.cmd(&["HELLO", "3", "AUTH", "default", "x"]).await, V::Map(_)));
    assert_eq!(c.cmd(&["AUTH", "bob", "x"]).await.err_code(), Some("NOAUTH"));
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_turns_extra_clients_away() {
    let config = ServerConfig { max_connections: 2, ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let mut a = Raw::connect(srv.addr).await;
    let mut b = Raw::connect(srv.addr).await;
    assert_eq!(a.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert_eq!(b.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.read().await, Some(V::Err("BUSY max connections reached".into())));
    assert_eq!(c.read().await, None);
    assert_eq!(a.cmd(&["PING"]).await, V::Simple("PONG".into()));
    // Once a slot frees, a new client is served (the permit is released
    // when the old task ends, so try until it is).
    drop(a);
    let mut served = false;
    for _ in 0..300 {
        let mut d = Raw::connect(srv.addr).await;
        d.send(&encode_cmd(&[b"PING"])).await;
        if d.read().await == Some(V::Simple("PONG".into())) {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot is reused");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_when_configured() {
    let config = ServerConfig { idle_timeout_ms: 100, ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let mut c = Raw::connect(srv.addr).await;
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    // Send nothing: the server closes (read() is bounded by PATIENCE).
    assert_eq!(c.read().await, None);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_bound_disconnects() {
    let backend = TestBackend::new();
    backend.big_reply_bytes.store(1024 * 1024, Ordering::Relaxed);
    let config = ServerConfig { output_buffer_bytes_max: 256 * 1024, ..ServerConfig::default() };
    let srv = TestServer::start(config, backend).await;
    let mut c = Raw::connect(srv.addr).await;
    c.send(&encode_cmd(&[b"VALUE.GET", b"k"])).await;
    assert_eq!(c.read_until_closed().await, vec![], "no partial reply, just a close");
    let mut other = Raw::connect(srv.addr).await;
    assert_eq!(other.cmd(&["PING"]).await, V::Simple("PONG".into()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_flight() {
    let backend = TestBackend::new();
    let srv = TestServer::start(ServerConfig::default(), backend.clone()).await;
    let addr = srv.addr;
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    let mut idle = Raw::connect(addr).await;
    assert_eq!(idle.cmd(&["PING"]).await, V::Simple("PONG".into()));
    // A batch held inside the backend.
    let mut pipe = encode_cmd(&[b"IDEM.GET", b"gate"]);
    pipe.extend(encode_cmd(&[b"IDEM.GET", b"after"]));
    c.send(&pipe).await;
    while backend.batch_sizes().is_empty() {
        tokio::task::yield_now().await;
    }
    let task = srv.begin_stop();
    // The idle connection is closed; new connections are refused.
    assert_eq!(idle.read().await, None);
    let mut refused = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener is closed on shutdown");
    assert!(!task.is_finished());
    backend.open_gate();
    // The batch in flight is answered in full, then the connection closes.
    assert_eq!(c.read().await.unwrap().as_array()[0], V::bulk("echo"));
    assert_eq!(c.read().await.unwrap().as_array()[1], V::bulk("IDEM.GET"));
    assert_eq!(c.read().await, None);
    tokio::time::timeout(common::PATIENCE, task).await.expect("run returns").unwrap();
    assert!(backend.shut_down.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_against_test_backend() {
    let config = ServerConfig { http_bind: Some("127.0.0.1:0".parse().unwrap()), ..ServerConfig::default() };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let http = srv.http.expect("http bound");
    let (status, _, body) = common::http(http, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"ok\n");
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], br#"["IDEM.GET","k"]"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!(["echo", "IDEM.GET", 1]));
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], br#"["IDEM.ABORT","stale","1"]"#).await;
    assert_eq!(status, 409);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "STALE");
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], br#"["NOSUCH"]"#).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "ERR");
    let (status, _, _) = common::http(http, "POST", "/v1/command", &[], b"not json").await;
    assert_eq!(status, 400);
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], br#"["PING"]"#).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    // Body over http_body_bytes_max (8 MiB).
    let huge = vec![b' '; 9 * 1024 * 1024];
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], &huge).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_requires_the_password_when_set() {
    let config = ServerConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        password: Some("pw".into()),
        ..ServerConfig::default()
    };
    let srv = TestServer::start(config, TestBackend::new()).await;
    let http = srv.http.unwrap();
    let (status, _, body) = common::http(http, "POST", "/v1/command", &[], br#"["IDEM.GET","k"]"#).await;
    assert_eq!(status, 401);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "NOAUTH");
    let auth = [("Authorization", "Bearer pw")];
    let (status, _, _) = common::http(http, "POST", "/v1/command", &auth, br#"["IDEM.GET","k"]"#).await;
    assert_eq!(status, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_rejects_nonsense_configuration() {
    let config = ServerConfig { args_max: 0, bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    assert!(idem_server::Server::bind(config).await.is_err());
}

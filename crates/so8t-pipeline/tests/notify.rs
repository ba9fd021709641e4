//! Notifiers against a real HTTP server on 127.0.0.1 and an empty `PATH`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use so8t_pipeline::notify::{self, Event, NotifyConfig, Sound, WebhookConfig};

fn event() -> Event {
    Event {
        title: "so8t pipeline demo".into(),
        status: "failed".into(),
        message: "step train failed: out of memory".into(),
        dir: "/tmp/so8t-demo".into(),
        report: Some("/tmp/so8t-demo/report.md".into()),
        duration_s: 12.5,
    }
}

/// One received request: (request line, headers lower-cased, body).
type Request = (String, Vec<(String, String)>, String);

fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().ok()?;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((
        line.trim_end().to_string(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// A server answering each connection with the next status of `statuses`, then closing;
/// every request goes to the returned channel.
fn server(statuses: Vec<u16>) -> (String, mpsc::Receiver<Request>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for code in statuses {
            let Ok((mut s, _)) = l.accept() else { return };
            let Some(req) = read_request(&mut s) else {
                return;
            };
            let _ = tx.send(req);
            let reason = if code == 200 { "OK" } else { "Nope" };
            let _ = write!(
                s,
                "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            let _ = s.flush();
        }
    });
    (url, rx)
}

fn webhook_cfg(url: &str, retries: u32) -> NotifyConfig {
    let mut w = WebhookConfig::new(url);
    w.retries = retries;
    w.backoff_secs = 0.05;
    w.timeout_secs = 5.0;
    w.headers.insert("X-Token".into(), "s3cret".into());
    NotifyConfig {
        webhook: Some(w),
        ..Default::default()
    }
}

#[test]
fn webhook_retries_a_500_then_delivers_the_event_json() {
    let (url, rx) = server(vec![500, 200]);
    let out = notify::send(&webhook_cfg(&url, 3), &event());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].notifier, "webhook");
    assert!(out[0].ok, "{out:?}");
    assert!(out[0].detail.contains("2 attempt"), "{}", out[0].detail);
    let reqs: Vec<Request> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 2);
    for (line, headers, body) in &reqs {
        assert_eq!(line, "POST /hook HTTP/1.1");
        assert!(headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
        assert!(headers.iter().any(|(k, v)| k == "x-token" && v == "s3cret"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v, serde_json::to_value(event()).unwrap());
        assert_eq!(v["status"], "failed");
        assert_eq!(v["duration_s"], 12.5);
        assert_eq!(v["report"], "/tmp/so8t-demo/report.md");
    }
}

#[test]
fn webhook_400_is_not_retried() {
    let (url, rx) = server(vec![400, 200]);
    let out = notify::send(&webhook_cfg(&url, 3), &event());
    assert!(!out[0].ok);
    assert!(out[0].detail.contains("400"), "{}", out[0].detail);
    assert!(out[0].detail.contains("not retried"), "{}", out[0].detail);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.try_iter().count(), 1);
}

#[test]
fn webhook_429_and_5xx_give_up_after_the_retries() {
    let (url, rx) = server(vec![429, 503, 502, 200]);
    let out = notify::send(&webhook_cfg(&url, 2), &event());
    assert!(!out[0].ok, "{out:?}");
    assert!(out[0].detail.contains("502"), "{}", out[0].detail);
    assert!(out[0].detail.contains("3 attempt"), "{}", out[0].detail);
    assert_eq!(rx.try_iter().count(), 3);
}

#[test]
fn webhook_to_a_closed_port_fails_without_panicking() {
    // Bind and drop a listener: the port is closed right after.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let out = notify::send(&webhook_cfg(&url, 1), &event());
    assert_eq!(out.len(), 1);
    assert!(!out[0].ok);
    assert!(out[0].detail.contains("2 attempt"), "{}", out[0].detail);
    // A URL that is not one at all is an outcome too.
    let out = notify::send(&webhook_cfg("not a url", 3), &event());
    assert!(!out[0].ok, "{out:?}");
}

#[test]
fn desktop_and_sound_without_programs_fail_softly() {
    let empty = tempfile::tempdir().unwrap();
    let cfg = NotifyConfig {
        desktop: true,
        sound: Sound::File(empty.path().join("missing.wav")),
        webhook: None,
    };
    let out = notify::send_with_search_path(&cfg, &event(), Some(empty.path().as_os_str()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].notifier, "desktop");
    assert!(!out[0].ok);
    assert!(out[0].detail.contains("notify-send"), "{}", out[0].detail);
    assert_eq!(out[1].notifier, "sound");
    assert!(!out[1].ok);
    assert!(out[1].detail.contains("missing.wav"), "{}", out[1].detail);
    // The chime with no player falls back to the bell, which counts as delivered.
    let cfg = NotifyConfig {
        sound: Sound::Chime,
        ..Default::default()
    };
    let out = notify::send_with_search_path(&cfg, &event(), Some(empty.path().as_os_str()));
    assert_eq!(out.len(), 1);
    assert!(out[0].ok, "{out:?}");
    assert!(out[0].detail.contains("bell"), "{}", out[0].detail);
    // Nothing configured: nothing sent.
    assert!(notify::send(&NotifyConfig::default(), &event()).is_empty());
}

#[test]
fn a_failing_notify_send_is_reported_and_a_hanging_one_killed() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let script = bin.path().join("notify-send");
    std::fs::write(&script, "#!/bin/sh\necho 'no display here' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = NotifyConfig {
        desktop: true,
        ..Default::default()
    };
    let out = notify::send_with_search_path(&cfg, &event(), Some(bin.path().as_os_str()));
    assert!(!out[0].ok);
    assert!(
        out[0].detail.contains("no display here"),
        "{}",
        out[0].detail
    );
    // A recording notify-send: the arguments it got.
    let log = bin.path().join("args.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let out = notify::send_with_search_path(&cfg, &event(), Some(bin.path().as_os_str()));
    assert!(out[0].ok, "{out:?}");
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "--app-name=so8t",
            "--urgency=critical",
            "--",
            "so8t pipeline demo",
            "step train failed: out of memory"
        ]
    );
    // run_with_timeout kills a child that hangs.
    let t = std::time::Instant::now();
    let r = notify::run_with_timeout(
        std::process::Command::new("sleep").arg("30"),
        Duration::from_millis(300),
    );
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(10));
}

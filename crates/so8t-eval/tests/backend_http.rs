//! The HTTP backends against a scripted server on 127.0.0.1: retries on 5xx/429 with backoff,
//! no retry on 4xx, timeouts reported per item while the run goes on, and the Ollama flavor
//! refusing log-likelihood tasks with a clear message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use so8t_eval::backend::{Backend, HttpBackend, HttpFlavor};
use so8t_eval::run::run_task;
use so8t_eval::tasks::{Gold, Item, Prompt, Query, TaskKind};

/// Serves each request with `reply(n, body)` → (status, body), or None to hang.
fn server(
    reply: impl Fn(usize, &str) -> Option<(u16, String)> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let n = c2.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                match reply(n, &String::from_utf8_lossy(&body)) {
                    Some((status, text)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        );
                    }
                    None => std::thread::sleep(Duration::from_secs(30)),
                }
            });
        }
    });
    (url, count)
}

fn gen_item(id: &str) -> Item {
    Item {
        id: id.into(),
        query: Query::Generate {
            prompt: Prompt::Text("Question: 1+1?\nAnswer:".into()),
            until: vec!["Question:".into()],
            max_tokens: 8,
            gold: Gold::Answer("#### 2".into()),
        },
    }
}

const OK: &str = r#"{"choices":[{"text":" 2\n#### 2\nQuestion: next"}],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;

#[test]
fn server_errors_are_retried_then_succeed() {
    let (url, count) = server(|n, body| {
        assert!(body.contains("\"temperature\":0"), "{body}");
        Some(if n < 2 {
            (503, "{\"error\":\"busy\"}".into())
        } else {
            (200, OK.into())
        })
    });
    let b = HttpBackend::new(
        &url,
        "m",
        HttpFlavor::OpenAi,
        Duration::from_secs(5),
        2,
        None,
    )
    .unwrap();
    let r = run_task("gsm8k", TaskKind::Gsm8k, &[gen_item("a")], &b, 1, false);
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert!(r[0].error.is_none(), "{:?}", r[0].error);
    assert_eq!(
        r[0].output.as_deref(),
        Some(" 2\n#### 2\n"),
        "cut at the stop string"
    );
    assert!(r[0].correct);
}

#[test]
fn bad_requests_are_not_retried_and_hangs_time_out_per_item() {
    let (url, count) = server(|_, _| Some((400, "{\"error\":\"bad field\"}".into())));
    let b = HttpBackend::new(
        &url,
        "m",
        HttpFlavor::OpenAi,
        Duration::from_secs(5),
        3,
        None,
    )
    .unwrap();
    let e = b
        .generate(&Prompt::Text("x".into()), &[], 4)
        .unwrap_err()
        .to_string();
    assert_eq!(count.load(Ordering::SeqCst), 1, "a 400 is not retried");
    assert!(e.contains("HTTP 400") && e.contains("bad field"), "{e}");

    // Item "slow" hangs; the others answer: the run finishes with one error.
    let (url, _) = server(|_, body| {
        if body.contains("slow") {
            None
        } else {
            Some((200, OK.into()))
        }
    });
    let b = HttpBackend::new(
        &url,
        "m",
        HttpFlavor::OpenAi,
        Duration::from_millis(500),
        1,
        None,
    )
    .unwrap();
    let mut items = vec![gen_item("a"), gen_item("slow"), gen_item("c")];
    if let Query::Generate { prompt, .. } = &mut items[1].query {
        *prompt = Prompt::Text("slow".into());
    }
    let r = run_task("gsm8k", TaskKind::Gsm8k, &items, &b, 2, false);
    assert_eq!(r.len(), 3);
    assert!(r[0].error.is_none() && r[2].error.is_none());
    let e = r[1].error.as_deref().unwrap();
    assert!(e.contains("after 2 tries"), "{e}");
    assert!(!r[1].correct);
}

#[test]
fn ollama_refuses_loglikelihood_tasks() {
    let b = HttpBackend::new(
        "http://127.0.0.1:9",
        "m",
        HttpFlavor::Ollama,
        Duration::from_secs(1),
        0,
        None,
    )
    .unwrap();
    let e = b
        .loglikelihood("ctx", &[" a".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no prompt log-probabilities"), "{e}");
}

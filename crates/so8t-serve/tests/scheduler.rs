//! The scheduler's hand-over of generated tokens: held back for `flush_interval`, they still
//! all arrive, in order, before `Done`, equal to the tokens handed over one by one. (A client
//! that goes away mid-stream is tested through the server: `so8t-cli/tests/serve_cli.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use so8t_model::generate::SamplingParams;
use so8t_serve::engine::EngineModel;
use so8t_serve::scheduler::{Finish, GenEvent, GenParams, Scheduler, SchedulerOptions};

fn model() -> Arc<EngineModel> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/llama-gqa-tiny");
    Arc::new(EngineModel::load(&dir).expect("loading the llama-gqa-tiny fixture"))
}

fn params(max_tokens: usize) -> GenParams {
    GenParams {
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..SamplingParams::default()
        },
        ..GenParams::default()
    }
}

/// Every event of one request, in arrival order.
fn events(s: &Scheduler, prompt: &[u32], max_tokens: usize) -> Vec<GenEvent> {
    let mut rx = s.submit(prompt.to_vec(), params(max_tokens)).unwrap();
    let mut out = Vec::new();
    while let Some(e) = rx.blocking_recv() {
        let done = matches!(e, GenEvent::Done(..) | GenEvent::Error(_));
        out.push(e);
        if done {
            break;
        }
    }
    out
}

fn tokens(ev: &[GenEvent]) -> Vec<u32> {
    ev.iter()
        .filter_map(|e| match e {
            GenEvent::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn scheduler(m: &Arc<EngineModel>, flush: Duration) -> Scheduler {
    Scheduler::start(
        m.clone(),
        SchedulerOptions {
            threads: 2,
            flush_interval: flush,
            ..SchedulerOptions::default()
        },
    )
}

#[test]
fn held_tokens_all_arrive_in_order_before_done() {
    let m = model();
    let each = events(&scheduler(&m, Duration::ZERO), &[1, 5, 9, 13], 12);
    let held = events(
        &scheduler(&m, Duration::from_secs(3600)),
        &[1, 5, 9, 13],
        12,
    );
    assert_eq!(tokens(&each).len(), 12, "{each:?}");
    assert_eq!(tokens(&held), tokens(&each));
    for ev in [&each, &held] {
        match ev.last() {
            Some(GenEvent::Done(Finish::Length, u)) => assert_eq!(u.completion_tokens, 12),
            other => panic!("last event {other:?}"),
        }
        assert_eq!(ev.len(), 13, "only tokens and Done: {ev:?}");
    }
}

//! `GET /api/stream`: live updates by Server-Sent Events. The server looks at the run every
//! `interval` seconds and sends `update` (the overview, new events and the new metric rows) when
//! anything changed, `runs` when the run list changed, and `gone` when the run vanished or became
//! unreadable (it keeps looking, and sends `update` again when the run comes back).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use crate::api::{blocking, num, param};
use crate::overview::Live;
use crate::state::AppState;

struct Watch {
    state: Arc<AppState>,
    id: String,
    every: Duration,
    after: u64,
    last_event: i64,
    last_update: String,
    last_runs: String,
    gone: bool,
    first: bool,
    queue: VecDeque<Event>,
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl Watch {
    /// Reads the run once and queues what changed.
    async fn look(&mut self) {
        let live = Live {
            events_after: self.last_event,
            rows_after: self.after,
        };
        let id = self.id.clone();
        let read = blocking(&self.state, move |s| {
            Ok((s.runs(), s.overview(&id, true, Some(live))))
        })
        .await;
        let (runs, over) = match read {
            Ok(x) => x,
            Err(e) => (Value::Null, Err(e)),
        };
        let runs_text = runs.to_string();
        if !runs.is_null() && runs_text != self.last_runs {
            self.queue.push_back(event("runs", &runs));
            self.last_runs = runs_text;
        }
        match over {
            Ok(o) => {
                // What changed, without the clock-driven fields.
                let mut key = o.clone();
                key["progress"]["elapsed_s"] = Value::Null;
                key["progress"]["eta_s"] = Value::Null;
                let key = key.to_string();
                let has_rows = o["rows"]["step"].as_array().is_some_and(|a| !a.is_empty());
                if key != self.last_update || has_rows || self.gone {
                    if let Some(s) = o["rows"]["to"].as_u64() {
                        self.after = self.after.max(s);
                    }
                    if let Some(e) = o["events"][0]["id"].as_i64() {
                        self.last_event = self.last_event.max(e);
                    }
                    self.queue.push_back(event("update", &o));
                    self.last_update = key;
                }
                self.gone = false;
            }
            Err(e) => {
                if !self.gone {
                    self.queue
                        .push_back(event("gone", &json!({"error": e.to_string()})));
                }
                self.gone = true;
                self.last_update.clear();
            }
        }
    }
}

/// The SSE route.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> crate::Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = param(&q, "run")?.to_string();
    let every = num::<u64>(&q, "interval")?
        .unwrap_or(state.cfg.refresh_interval)
        .clamp(1, 30);
    let after = num::<u64>(&q, "after")?.unwrap_or(0);
    let check = id.clone();
    blocking(&state, move |s| s.run_dir(&check).map(|_| ())).await?;
    let watch = Watch {
        state,
        id,
        every: Duration::from_secs(every),
        after,
        last_event: 0,
        last_update: String::new(),
        last_runs: String::new(),
        gone: false,
        first: true,
        queue: VecDeque::new(),
    };
    let s = stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(e) = w.queue.pop_front() {
                return Some((Ok(e), w));
            }
            if !w.first {
                tokio::time::sleep(w.every).await;
            }
            w.first = false;
            w.look().await;
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

//! The serve engine in this process: a GGUF file, an HF folder or a model of the store.
//! Choices of one question share the context's KV cache and go through one batched pass.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;
use so8t_model::TextTokenizer;
use so8t_serve::engine::{BatchEntry, EngineModel, ForwardOut, ModelFormat, Runner};
use so8t_serve::scheduler::log_softmax_pick;
use so8t_serve::template::{GoTemplate, TemplateData, TemplateMessage};

use super::{cut_at_stop, move_trailing_spaces, Backend, BackendError, Generation, Loglikelihood};
use crate::tasks::Prompt;

/// The engine in this process.
pub struct LocalBackend {
    runner: Mutex<Runner>,
    tok: TextTokenizer,
    template: Option<GoTemplate>,
    description: String,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

impl LocalBackend {
    /// Loads a GGUF file or HF folder with `threads` compute threads; `template` is a store
    /// model's Go template (else the model's own chat template is used).
    pub fn load(
        path: &Path,
        template: Option<&str>,
        threads: usize,
        description: String,
    ) -> Result<Self, BackendError> {
        let model = EngineModel::load(path).map_err(err)?;
        let tok = match (&model.format, &model.gguf) {
            (ModelFormat::Gguf, Some(f)) => {
                so8t_serve::tokenizer::tokenizer_from_gguf(f).map_err(err)?
            }
            _ => TextTokenizer::from_dir(path).map_err(err)?,
        };
        let template = template.map(GoTemplate::parse).transpose().map_err(err)?;
        Ok(Self {
            runner: Mutex::new(Runner::new(Arc::new(model), threads.max(1))),
            tok,
            template,
            description,
        })
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, BackendError> {
        self.tok.encode(text, special).map_err(err)
    }

    fn render(&self, prompt: &Prompt) -> Result<String, BackendError> {
        let msgs = match prompt {
            Prompt::Text(t) => return Ok(t.clone()),
            Prompt::Chat(m) => m,
        };
        if let Some(t) = &self.template {
            let data = TemplateData {
                system: msgs
                    .iter()
                    .filter(|m| m.0 == "system")
                    .map(|m| m.1.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
                prompt: msgs
                    .iter()
                    .rev()
                    .find(|m| m.0 == "user")
                    .map(|m| m.1.clone())
                    .unwrap_or_default(),
                response: String::new(),
                messages: msgs
                    .iter()
                    .map(|(role, content)| TemplateMessage {
                        role: role.clone(),
                        content: content.clone(),
                    })
                    .collect(),
                tools: Vec::new(),
            };
            return t.render(&data).map_err(err);
        }
        if self.tok.chat_template.is_some() {
            let m: Vec<_> = msgs
                .iter()
                .map(|(r, c)| json!({"role": r, "content": c}))
                .collect();
            return self.tok.apply_chat_template(&m, true).map_err(err);
        }
        Ok(msgs
            .iter()
            .map(|m| m.1.as_str())
            .collect::<Vec<_>>()
            .join("\n"))
    }

    fn argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn loglikelihood(
        &self,
        context: &str,
        continuations: &[String],
    ) -> Result<Vec<Loglikelihood>, BackendError> {
        let (ctx_text, _) = move_trailing_spaces(context, "");
        let ctx = self.encode(&ctx_text, false)?;
        if ctx.is_empty() {
            return Err(err("the context is empty"));
        }
        let mut conts = Vec::new();
        for c in continuations {
            let (ct, cc) = move_trailing_spaces(context, c);
            let whole = self.encode(&format!("{ct}{cc}"), false)?;
            let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
            if cont.is_empty() {
                return Err(err(format!("continuation {c:?} has no tokens of its own")));
            }
            conts.push(cont);
        }
        let mut runner = self.runner.lock().unwrap_or_else(|e| e.into_inner());
        let model = runner.model.clone();
        let vocab = model.cfg.vocab;
        let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
        if ctx.len() + longest > model.cfg.ctx_train {
            return Err(err(format!(
                "{} tokens exceed the model's context of {}",
                ctx.len() + longest,
                model.cfg.ctx_train
            )));
        }
        // The context but its last token once; then every choice in one batch, each on its own
        // copy of that cache.
        let n = ctx.len();
        let mut base = model.new_cache();
        let mut out = ForwardOut::default();
        if n > 1 {
            let batch: Vec<BatchEntry> = ctx[..n - 1]
                .iter()
                .enumerate()
                .map(|(pos, &token)| BatchEntry {
                    cache: 0,
                    token,
                    pos,
                    logits: false,
                })
                .collect();
            runner
                .forward(&mut [&mut base], &batch, false, &mut out)
                .map_err(err)?;
        }
        let mut caches: Vec<_> = conts.iter().map(|_| base.clone()).collect();
        let mut batch = Vec::new();
        for (ci, cont) in conts.iter().enumerate() {
            let feed = std::iter::once(ctx[n - 1]).chain(cont[..cont.len() - 1].iter().copied());
            for (j, token) in feed.enumerate() {
                batch.push(BatchEntry {
                    cache: ci,
                    token,
                    pos: n - 1 + j,
                    logits: true,
                });
            }
        }
        let mut refs: Vec<&mut _> = caches.iter_mut().collect();
        out = ForwardOut::default();
        runner
            .forward(&mut refs, &batch, false, &mut out)
            .map_err(err)?;
        let mut row = 0;
        let mut res = Vec::new();
        for cont in &conts {
            let mut lp = 0f64;
            let mut greedy = true;
            for &t in cont {
                let logits = &out.logits[row * vocab..(row + 1) * vocab];
                lp += log_softmax_pick(logits, t, 0).logprob as f64;
                greedy &= Self::argmax(logits) == t;
                row += 1;
            }
            res.push(Loglikelihood {
                logprob: lp,
                greedy,
                tokens: cont.len(),
            });
        }
        Ok(res)
    }

    fn generate(
        &self,
        prompt: &Prompt,
        until: &[String],
        max_tokens: usize,
    ) -> Result<Generation, BackendError> {
        let text = self.render(prompt)?;
        let has_bos = self
            .tok
            .bos_token
            .as_deref()
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let ids = self.encode(&text, !has_bos)?;
        if ids.is_empty() {
            return Err(err("the prompt is empty"));
        }
        let mut runner = self.runner.lock().unwrap_or_else(|e| e.into_inner());
        let model = runner.model.clone();
        let limit = model.cfg.ctx_train;
        if ids.len() >= limit {
            return Err(err(format!(
                "the prompt has {} tokens, the context {limit}",
                ids.len()
            )));
        }
        let mut cache = model.new_cache();
        let mut out = ForwardOut::default();
        let last = ids.len() - 1;
        let batch: Vec<BatchEntry> = ids
            .iter()
            .enumerate()
            .map(|(pos, &token)| BatchEntry {
                cache: 0,
                token,
                pos,
                logits: pos == last,
            })
            .collect();
        runner
            .forward(&mut [&mut cache], &batch, false, &mut out)
            .map_err(err)?;
        let mut generated: Vec<u32> = Vec::new();
        let mut text_out = String::new();
        loop {
            let next = Self::argmax(&out.logits);
            if self.tok.stop_token_ids.contains(&next) {
                break;
            }
            generated.push(next);
            text_out = self.tok.decode(&generated, true).map_err(err)?;
            if cut_at_stop(&mut text_out, until) || generated.len() >= max_tokens {
                break;
            }
            let pos = ids.len() + generated.len() - 1;
            if pos + 1 >= limit {
                break;
            }
            out = ForwardOut::default();
            let e = BatchEntry {
                cache: 0,
                token: next,
                pos,
                logits: true,
            };
            runner
                .forward(&mut [&mut cache], &[e], false, &mut out)
                .map_err(err)?;
        }
        cut_at_stop(&mut text_out, until);
        Ok(Generation {
            text: text_out,
            prompt_tokens: ids.len(),
            tokens: generated.len(),
        })
    }
}

// so8t dashboard: the charts of a run, by its kind (sft: so8t train, rl: so8t rl), their series,
// colours and labels.

export const COLORS = {
  loss: "#93c5fd", loss_smooth: "#1d4ed8", ce: "#14b8a6", pet: "#f59e0b", orth: "#a855f7",
  lr: "#7c3aed", alpha: "#db2777", grad_norm: "#ea580c", tokens_per_s: "#059669",
  cpu_pct: "#2563eb", ram_pct: "#7c3aed", gpu_util_pct: "#059669", vram_pct: "#f59e0b", gpu_temp_c: "#dc2626",
  reward: "#86efac", reward_smooth: "#15803d", reward_class: "#2563eb", reward_format: "#0891b2",
  reward_leak: "#dc2626", reward_overlength: "#f59e0b", accuracy: "#15803d", parsed: "#94a3b8",
  kl: "#7c3aed", beta: "#db2777", approx_kl: "#a855f7", entropy: "#0891b2", clip_fraction: "#ea580c",
  policy_loss: "#2563eb", value_loss: "#f59e0b", answer_tokens: "#475569",
};
export const LABELS = {
  loss: "loss", loss_smooth: "loss (EMA)", ce: "ce", pet: "pet", orth: "orth", lr: "lr", alpha: "α",
  grad_norm: "grad norm", tokens_per_s: "tokens/s", cpu_pct: "CPU %", ram_pct: "RAM %",
  gpu_util_pct: "GPU util %", vram_pct: "VRAM %", gpu_temp_c: "GPU temp °C",
  reward: "reward", reward_smooth: "reward (EMA)", reward_class: "class", reward_format: "format",
  reward_leak: "leak", reward_overlength: "over-length", accuracy: "accuracy", parsed: "class parsed",
  kl: "KL", beta: "β", approx_kl: "approx KL (update)", entropy: "entropy", clip_fraction: "clip fraction",
  policy_loss: "policy loss", value_loss: "value loss", answer_tokens: "answer tokens",
};
// `kind`: shown only for runs of that kind (sft: so8t train, rl: so8t rl); none: for both.
export const CHARTS = {
  loss: { kind: "sft", title: "Loss", sub: "total = ce + pet + orth", series: ["loss", "loss_smooth", "ce", "pet", "orth"], hidden: ["pet", "orth"], height: 280, logToggle: true, bands: "loss" },
  reward: { kind: "rl", title: "Reward", sub: "mean per answer, and its terms; transitions shaded", series: ["reward", "reward_smooth", "reward_class", "reward_format", "reward_leak", "reward_overlength"], hidden: ["reward_leak", "reward_overlength"], height: 280, bands: "reward" },
  accuracy: { kind: "rl", title: "Accuracy", sub: "answers with the right class / a class", series: ["accuracy", "parsed"], yFixed: [0, 1] },
  kl: { kind: "rl", title: "KL to the reference", sub: "per answer, at rollout", series: ["kl"], nonNegative: true },
  beta: { kind: "rl", title: "KL coefficient β", sub: "fixed or adaptive", series: ["beta"], nonNegative: true },
  policy: { kind: "rl", title: "Policy", sub: "entropy, clipped ratios, KL per update", series: ["entropy", "clip_fraction", "approx_kl"], nonNegative: true },
  rl_loss: { kind: "rl", title: "Update loss", sub: "total = policy + value + orth", series: ["loss", "policy_loss", "value_loss", "orth"], hidden: ["orth"] },
  lr: { title: "Learning rate", series: ["lr"], nonNegative: true },
  alpha: { title: "α", sub: "gate angle, transitions shaded", series: ["alpha"], bands: "loss" },
  grad_norm: { title: "Gradient norm", sub: "before clipping", series: ["grad_norm"], nonNegative: true },
  answer_tokens: { kind: "rl", title: "Answer length", sub: "tokens per answer", series: ["answer_tokens"], nonNegative: true },
  tokens_per_s: { title: "Throughput", sub: "tokens / s (RL: sampled)", series: ["tokens_per_s"], nonNegative: true },
  system: { title: "System", sub: "% and °C", series: ["cpu_pct", "ram_pct", "gpu_util_pct", "vram_pct", "gpu_temp_c"], height: 220, yFixed: [0, 100] },
};
/** The series the charts of a run of `kind` show, in chart order (index.html asks for the same). */
const seriesOf = (kind) => [...new Set(Object.values(CHARTS).filter((c) => !c.kind || c.kind === kind).flatMap((c) => c.series))];
export const KIND_SERIES = { sft: seriesOf("sft"), rl: seriesOf("rl") };
export const runKind = (k) => (k === "rl" ? "rl" : "sft");
export const COMPARE_SERIES = ["loss", "loss_smooth", "ce", "pet", "orth", "alpha", "pet_lambda", "lr", "grad_norm", "tokens_per_s", "cpu_pct", "ram_pct", "gpu_util_pct", "vram_pct", "gpu_temp_c", "reward", "reward_smooth", "accuracy", "kl", "beta", "entropy", "clip_fraction"];

//! Tests of near-duplicate removal (a child module, so private helpers are reachable).

use super::*;
use crate::dedup::normalize;
use std::collections::HashSet;

fn dedup() -> NearDedup {
    NearDedup::new(NearDedupConfig::default()).unwrap()
}

fn shingles(text: &str, k: usize) -> HashSet<String> {
    let c: Vec<char> = normalize(text).chars().collect();
    let k = k.min(c.len());
    c.windows(k.max(1)).map(|w| w.iter().collect()).collect()
}

fn jaccard(a: &str, b: &str, k: usize) -> f64 {
    let (x, y) = (shingles(a, k), shingles(b, k));
    x.intersection(&y).count() as f64 / x.union(&y).count() as f64
}

/// Random lowercase "words" of length 2–8, `n` of them.
fn random_text(rng: &mut SplitMix64, n: usize) -> String {
    (0..n)
        .map(|_| {
            let len = 2 + rng.below(7) as usize;
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const BASE: &str = "How can I safely store household cleaning chemicals so that my children cannot reach them at home? I also keep a few cleaning sprays and bleach under the kitchen sink. My youngest has recently learned to open cupboard doors, so I want a plan that works.";

#[test]
fn drops_exact_and_slightly_changed_copies() {
    let mut d = dedup();
    assert!(d.insert(BASE));
    assert!(!d.insert(BASE), "exact copy kept");
    assert!(!d.insert(&BASE.to_uppercase()), "case-only change kept");
    let edited = BASE.replace("safely", "safel").replace("home?", "home!");
    assert!(
        jaccard(BASE, &edited, 5) >= 0.9,
        "{}",
        jaccard(BASE, &edited, 5)
    );
    assert!(!d.insert(&edited), "two-character edit kept");
    assert!(d.insert("What is the boiling point of water at the top of Mount Fuji?"));
    assert!(d.insert("Write a short poem about autumn leaves falling in Kyoto."));
    assert_eq!(d.len(), 3);
    assert!(!d.is_empty());
}

#[test]
fn keeps_pairs_well_below_threshold() {
    // Build a pair with true shingle Jaccard around 0.5.
    let a = "the quick brown fox jumps over the lazy dog while the farmer sleeps in the barn";
    let b = "the quick brown fox jumps over the lazy dog but a cat watches from the old oak tree";
    let j = jaccard(a, b, 5);
    assert!((0.3..0.65).contains(&j), "pair Jaccard {j}");
    let mut d = dedup();
    assert!(d.insert(a));
    assert!(
        d.insert(b),
        "pair with Jaccard {j} dropped at threshold 0.8"
    );
}

#[test]
fn detects_japanese_near_duplicates() {
    let a = "子どもが誤って台所用の洗剤を飲み込んでしまった場合、まず何をすればよいですか？すぐに病院へ行くべきでしょうか、それとも様子を見てもよいのでしょうか。念のため、家にある洗剤の種類と量もメモしておきました。";
    let b = "子どもが誤って台所用の洗剤を飲み込んでしまった場合、まず何をすればいいですか？すぐに病院へ行くべきでしょうか、それとも様子を見てもよいのでしょうか。念のため、家にある洗剤の種類と量もメモしておきました。";
    let c = "東京から大阪まで新幹線で行くと、だいたい何時間くらいかかりますか？";
    assert!(jaccard(a, b, 5) >= 0.9, "{}", jaccard(a, b, 5));
    let mut d = dedup();
    assert!(d.insert(a));
    assert!(!d.insert(b), "Japanese near-duplicate kept");
    let spaced = "子どもが誤って台所用の洗剤を飲み込んでしまった場合、まず何をすればよいですか？　すぐに病院へ行くべきでしょうか、それとも様子を見てもよいのでしょうか。念のため、家にある洗剤の種類と量もメモしておきました。";
    assert!(jaccard(a, spaced, 5) >= 0.9, "{}", jaccard(a, spaced, 5));
    assert!(!d.insert(spaced), "Japanese copy with an added space kept");
    assert!(d.insert(c));
    assert_eq!(d.len(), 2);
}

#[test]
fn normalized_chars_match_normalize() {
    let alphabet: Vec<char> =
        "aZ09 \t\n\r.,?！？ＡＺａｚ０　\u{a0}\u{2003}ÀÉßΣσİẞǅあアー漢字㐀ｶ한😀\u{301}"
            .chars()
            .collect();
    let mut rng = SplitMix64::new(5);
    for _ in 0..3000 {
        let len = rng.below(12) as usize;
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect();
        let mut got = String::new();
        for_each_normalized_char(&text, |c| got.push(c));
        assert_eq!(got, normalize(&text), "{text:?}");
    }
}

#[test]
fn short_and_empty_texts() {
    let mut d = dedup();
    assert!(d.insert(""));
    assert!(d.insert("   "), "empty text is never a near-dup");
    assert!(d.insert("hi"));
    assert!(
        !d.insert("HI"),
        "short text shorter than the shingle is one shingle"
    );
    assert!(d.insert("ho"));
    assert_eq!(d.len(), 4);
    assert!(d.signature("").is_none());
}

#[test]
fn estimated_jaccard_tracks_true_jaccard() {
    let mut d = dedup();
    let mut rng = SplitMix64::new(7);
    let (mut within, mut total, mut abs_err) = (0, 0, 0.0);
    for _ in 0..200 {
        let a = random_text(&mut rng, 25);
        // Replace a random share of the words to spread similarities over (0, 1).
        let keep = rng.next_f64();
        let b: Vec<String> = a
            .split(' ')
            .map(|w| {
                if rng.next_f64() < keep {
                    w.to_string()
                } else {
                    random_text(&mut rng, 1)
                }
            })
            .collect();
        let b = b.join(" ");
        let truth = jaccard(&a, &b, 5);
        let (sa, sb) = (d.signature(&a).unwrap(), d.signature(&b).unwrap());
        let est = estimated_jaccard(&sa, &sb);
        abs_err += (est - truth).abs();
        total += 1;
        if (est - truth).abs() <= 0.1 {
            within += 1;
        }
    }
    // With 128 permutations the standard error is at most 0.044, so a few pairs in 200
    // may fall just outside ±0.1; the bulk must be within and the mean error small.
    assert!(within >= total * 97 / 100, "{within}/{total} within ±0.1");
    assert!(
        abs_err / (total as f64) < 0.04,
        "mean abs error {}",
        abs_err / total as f64
    );
}

#[test]
fn deterministic_for_a_seed() {
    let mut rng = SplitMix64::new(11);
    let texts: Vec<String> = (0..300)
        .map(|i| {
            if i % 3 == 1 && i > 1 {
                // Texts 7 and 10, 13 and 16, …: the same 12 words plus a marker, so some drop.
                format!(
                    "{} x{}",
                    random_text(&mut SplitMix64::new(i / 6), 12),
                    i % 2
                )
            } else {
                random_text(&mut rng, 12)
            }
        })
        .collect();
    let run = |seed| {
        let mut d = NearDedup::new(NearDedupConfig {
            seed,
            ..Default::default()
        })
        .unwrap();
        texts.iter().map(|t| d.insert(t)).collect::<Vec<_>>()
    };
    let first = run(5);
    assert_eq!(first, run(5));
    assert!(
        first.iter().any(|&kept| !kept),
        "no near-duplicates in the mix"
    );
    let mut d1 = NearDedup::new(NearDedupConfig::default()).unwrap();
    let mut d2 = NearDedup::new(NearDedupConfig::default()).unwrap();
    assert_eq!(d1.signature(BASE), d2.signature(BASE));
    let mut d3 = NearDedup::new(NearDedupConfig {
        seed: 99,
        ..Default::default()
    })
    .unwrap();
    assert_ne!(d1.signature(BASE), d3.signature(BASE));
}

#[test]
fn recall_above_and_precision_below_threshold() {
    // Pairs made by replacing a few words: those with true Jaccard ≥ 0.9 must almost all be
    // found, those below 0.6 never.
    let mut rng = SplitMix64::new(21);
    let (mut high, mut found, mut low, mut wrong) = (0, 0, 0, 0);
    for _ in 0..400 {
        let a = random_text(&mut rng, 30);
        let mut words: Vec<String> = a.split(' ').map(str::to_string).collect();
        let edits = if rng.below(2) == 0 {
            rng.below(3)
        } else {
            6 + rng.below(10)
        };
        for _ in 0..edits {
            let i = rng.below(words.len() as u64) as usize;
            words[i] = random_text(&mut rng, 1);
        }
        let b = words.join(" ");
        let j = jaccard(&a, &b, 5);
        let mut d = dedup();
        d.insert(&a);
        let dropped = !d.insert(&b);
        if j >= 0.9 {
            high += 1;
            found += usize::from(dropped);
        } else if j < 0.6 {
            low += 1;
            wrong += usize::from(dropped);
        }
    }
    println!("recall {found}/{high} at J >= 0.9, {wrong}/{low} dropped below 0.6");
    assert!(high >= 50 && low >= 50, "pair mix: {high} high, {low} low");
    assert!(
        found * 100 >= high * 97,
        "recall {found}/{high} at Jaccard ≥ 0.9"
    );
    assert_eq!(wrong, 0, "{wrong}/{low} pairs below 0.6 dropped");
}

#[test]
fn index_survives_growth_and_finds_every_copy() {
    let mut rng = SplitMix64::new(3);
    let texts: Vec<String> = (0..5000).map(|_| random_text(&mut rng, 10)).collect();
    let mut d = dedup();
    let kept: Vec<&String> = texts.iter().filter(|t| d.insert(t)).collect();
    assert!(
        kept.len() > 4990,
        "random texts dropped: {}",
        5000 - kept.len()
    );
    for t in &kept {
        assert!(!d.insert(t), "exact copy of a kept text not found: {t:?}");
    }
    assert_eq!(d.len(), kept.len());
    let (b, _) = d.bands();
    assert_eq!(
        d.table.len,
        kept.len() * b,
        "every band key of every kept text indexed"
    );
}

#[test]
fn validates_config() {
    let bad = |cfg: NearDedupConfig| NearDedup::new(cfg).err().unwrap();
    let d = NearDedupConfig::default();
    assert!(bad(NearDedupConfig {
        threshold: 0.0,
        ..d.clone()
    })
    .contains("threshold"));
    assert!(bad(NearDedupConfig {
        threshold: 1.5,
        ..d.clone()
    })
    .contains("threshold"));
    assert!(bad(NearDedupConfig {
        threshold: f64::NAN,
        ..d.clone()
    })
    .contains("threshold"));
    assert!(bad(NearDedupConfig {
        num_perm: 8,
        ..d.clone()
    })
    .contains("num_perm"));
    assert!(bad(NearDedupConfig {
        shingle: 0,
        ..d.clone()
    })
    .contains("shingle"));
    assert!(NearDedup::new(NearDedupConfig {
        threshold: 1.0,
        num_perm: 16,
        shingle: 1,
        seed: 0
    })
    .is_ok());
}

#[test]
fn band_choice_fits_and_matches_datasketch() {
    for (t, p) in [(0.8, 128), (0.5, 128), (0.9, 256), (0.7, 16), (1.0, 64)] {
        let d = NearDedup::new(NearDedupConfig {
            threshold: t,
            num_perm: p,
            ..Default::default()
        })
        .unwrap();
        let (b, r) = d.bands();
        assert!(b >= 1 && r >= 1 && b * r <= p, "t={t} p={p}: ({b}, {r})");
    }
    // Reference values from an independent fine-grid integration; with equal weights they
    // are datasketch's choices.
    assert_eq!(optimal_bands(0.8, 128, 0.5, 0.5), (9, 13));
    assert_eq!(optimal_bands(0.5, 128, 0.5, 0.5), (25, 5));
    assert_eq!(optimal_bands(0.9, 256, 0.5, 0.5), (9, 28));
    assert_eq!(optimal_bands(0.8, 128, 0.1, 0.9), (14, 9));
    assert_eq!(optimal_bands(0.5, 128, 0.1, 0.9), (32, 4));
    assert_eq!(optimal_bands(0.9, 256, 0.1, 0.9), (13, 19));
    assert_eq!(dedup().bands(), (14, 9));
}

/// Texts of about 40–200 characters: English-like words, Japanese-like kana/kanji runs,
/// and the English set again with every third text a one-word edit of an earlier one.
fn workloads() -> Vec<(&'static str, Vec<String>)> {
    let n = 200_000;
    let mut rng = SplitMix64::new(1);
    let en: Vec<String> = (0..n)
        .map(|_| {
            let words = 8 + rng.below(25) as usize;
            random_text(&mut rng, words)
        })
        .collect();
    let ja: Vec<String> = (0..n)
        .map(|_| {
            let len = 40 + rng.below(161) as usize;
            (0..len)
                .map(|_| match rng.below(3) {
                    0 => char::from_u32(0x4E00 + rng.below(2000) as u32).unwrap_or('字'),
                    _ => char::from_u32(0x3041 + rng.below(83) as u32).unwrap_or('あ'),
                })
                .collect()
        })
        .collect();
    let mixed: Vec<String> = (0..n)
        .map(|i| {
            if i % 3 == 2 {
                let src = &en[rng.below(i as u64) as usize];
                let mut words: Vec<&str> = src.split(' ').collect();
                let w = rng.below(words.len() as u64) as usize;
                words[w] = "edited";
                words.join(" ")
            } else {
                en[i].clone()
            }
        })
        .collect();
    vec![("en", en), ("ja", ja), ("en+1/3 near-dups", mixed)]
}

/// `cargo test -p so8t-data --release --lib -- --ignored --nocapture neardup_throughput`
#[test]
#[ignore]
fn neardup_throughput() {
    for (name, texts) in workloads() {
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        let mut d = dedup();
        let t0 = std::time::Instant::now();
        let kept = texts.iter().filter(|t| d.insert(t)).count();
        let s = t0.elapsed().as_secs_f64();
        println!(
            "neardup {name}: {} texts (mean {:.0} chars) in {:.2}s = {:.0} texts/s, kept {kept}, bands {:?}",
            texts.len(),
            chars as f64 / texts.len() as f64,
            s,
            texts.len() as f64 / s,
            d.bands()
        );
    }
}

//! What the thinking is derived from: facts read off a record (kind of request, domain, whether
//! context or a reference answer exists, a short quote of the request), never halves of its text.

use crate::label::Label;
use crate::record::{Lang, Record};

/// What sort of thing the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// How to do something.
    HowTo,
    /// Code or a script.
    Code,
    /// A translation.
    Translation,
    /// A calculation or conversion.
    Calculation,
    /// A piece of writing (letter, review, story …).
    Writing,
    /// Advice or a decision about the user's own situation.
    Advice,
    /// An explanation or a fact.
    Explanation,
    /// Anything else.
    Other,
}

/// The subject area, which decides who to escalate to and why a request is risky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// An emergency: danger to life right now.
    Emergency,
    /// Mental health and self-harm.
    MentalHealth,
    /// Health, symptoms, medicine.
    Medical,
    /// Law, contracts, disputes.
    Legal,
    /// Money, tax, investment.
    Finance,
    /// Weapons, explosives, violence.
    Violence,
    /// Computer intrusion, malware, passwords.
    Security,
    /// Deception, fraud, cheating, forgery.
    Deception,
    /// Other people's personal information.
    Privacy,
    /// Nothing specific.
    General,
}

/// Everything the thinking and the final answer are built from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The class.
    pub label: Label,
    /// The record's language.
    pub lang: Lang,
    /// The kind of request.
    pub kind: Kind,
    /// The subject area.
    pub domain: Domain,
    /// The first line of the request, cut to at most 60 characters (with `…` when cut).
    pub quote: String,
    /// The record carries extra context (`input`).
    pub has_context: bool,
    /// Sentences in the reference answer (0 when there is none).
    pub answer_sentences: usize,
    /// The reference answer contains code (backticks).
    pub answer_has_code: bool,
    /// A stable per-record number for choosing among phrasings.
    pub variant: u64,
}

const QUOTE_CHARS: usize = 60;

fn any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Guesses the kind of request from English and Japanese cue words.
pub fn kind_of(text: &str) -> Kind {
    let t = text.to_lowercase();
    if any(&t, &["translate", "翻訳", "英訳", "和訳"]) {
        Kind::Translation
    } else if any(
        &t,
        &[
            "code",
            "script",
            "function",
            "program",
            "sql",
            "regex",
            "python",
            "css",
            "コード",
            "スクリプト",
            "プログラム",
            "関数",
        ],
    ) {
        Kind::Code
    } else if any(
        &t,
        &[
            "calculate",
            "how many",
            "how much is",
            "convert",
            "celsius",
            "fahrenheit",
            "計算",
            "何ミリ",
            "何グラム",
            "何円",
            "換算",
            "いくら",
        ],
    ) {
        Kind::Calculation
    } else if any(
        &t,
        &[
            "write",
            "draft",
            "compose",
            "review",
            "書いて",
            "作って",
            "作成",
            "文章",
        ],
    ) {
        Kind::Writing
    } else if any(
        &t,
        &[
            "how do i",
            "how to",
            "how can i",
            "steps",
            "方法",
            "やり方",
            "どうすれば",
            "手順",
        ],
    ) {
        Kind::HowTo
    } else if any(
        &t,
        &[
            "should i",
            "can i",
            "is it ok",
            "is it safe",
            "my ",
            "いいですか",
            "べき",
            "大丈夫",
            "私の",
        ],
    ) {
        Kind::Advice
    } else if any(
        &t,
        &[
            "what",
            "why",
            "explain",
            "who",
            "when",
            "とは",
            "なぜ",
            "何",
            "教えて",
            "説明",
        ],
    ) {
        Kind::Explanation
    } else {
        Kind::Other
    }
}

/// Guesses the subject area from English and Japanese cue words; the most safety-relevant wins.
pub fn domain_of(text: &str) -> Domain {
    let t = text.to_lowercase();
    let table: [(Domain, &[&str]); 9] = [
        (
            Domain::Emergency,
            &[
                "emergency",
                "stroke",
                "gas leak",
                "smell gas",
                "fire",
                "unconscious",
                "not breathing",
                "chest pain",
                "ガス臭",
                "火事",
                "救急",
                "意識がない",
                "119",
            ],
        ),
        (
            Domain::MentalHealth,
            &[
                "suicid",
                "kill myself",
                "self-harm",
                "depress",
                "panic attack",
                "自殺",
                "死にたい",
                "うつ",
                "自傷",
            ],
        ),
        (
            Domain::Violence,
            &[
                "weapon",
                "bomb",
                "explosive",
                "poison",
                "hurt",
                "attack",
                "kill",
                "gun",
                "爆弾",
                "爆発",
                "武器",
                "毒",
                "傷つけ",
                "襲",
                "殺",
            ],
        ),
        (
            Domain::Security,
            &[
                "hack",
                "password",
                "malware",
                "ransomware",
                "server",
                "exploit",
                "phishing",
                "ddos",
                "ハッキング",
                "パスワード",
                "マルウェア",
                "ウイルス",
                "サーバー",
                "不正アクセス",
                "乗っ取",
            ],
        ),
        (
            Domain::Deception,
            &[
                "fake",
                "forge",
                "cheat",
                "exam answers",
                "answers to",
                "plagiar",
                "scam",
                "counterfeit",
                "lie to",
                "偽",
                "架空",
                "カンニング",
                "詐欺",
                "なりすま",
                "嘘",
                "改ざん",
            ],
        ),
        (
            Domain::Privacy,
            &[
                "home address",
                "stalk",
                "track someone",
                "spy on",
                "read their messages",
                "phone number",
                "電話番号",
                "住所",
                "尾行",
                "盗聴",
                "居場所",
                "個人情報",
            ],
        ),
        (
            Domain::Medical,
            &[
                "symptom",
                "medicine",
                "medication",
                "dose",
                "doctor",
                "pain",
                "antidepressant",
                "pregnan",
                "fever",
                "症状",
                "薬",
                "病院",
                "医師",
                "痛",
                "熱が",
                "妊娠",
            ],
        ),
        (
            Domain::Legal,
            &[
                "lawyer",
                "sue",
                "lawsuit",
                "contract",
                "legal",
                "court",
                "divorce",
                "will and",
                "弁護士",
                "訴",
                "契約",
                "法律",
                "裁判",
                "離婚",
                "相続",
            ],
        ),
        (
            Domain::Finance,
            &[
                "invest",
                "tax",
                "loan",
                "mortgage",
                "stock",
                "debt",
                "retirement",
                "投資",
                "税",
                "ローン",
                "株",
                "借金",
                "年金",
            ],
        ),
    ];
    table
        .iter()
        .find(|(_, words)| any(&t, words))
        .map(|(d, _)| *d)
        .unwrap_or(Domain::General)
}

/// The first line of `text`, cut to [`QUOTE_CHARS`] characters.
pub fn quote(text: &str) -> String {
    let first = text.trim().lines().next().unwrap_or("").trim();
    let n = first.chars().count();
    if n <= QUOTE_CHARS {
        first.to_string()
    } else {
        let cut: String = first.chars().take(QUOTE_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    }
}

fn sentences(text: &str) -> usize {
    let t = text.trim();
    if t.is_empty() {
        return 0;
    }
    let ends = t
        .char_indices()
        .filter(|&(i, c)| {
            matches!(c, '。' | '！' | '？' | '!' | '?')
                || (c == '.' && t[i + 1..].starts_with(|n: char| n.is_whitespace()))
        })
        .count();
    let last = t.chars().last().unwrap_or(' ');
    let closed = matches!(last, '。' | '！' | '？' | '!' | '?' | '.');
    (ends + usize::from(!closed)).max(1)
}

impl Facts {
    /// Reads the facts off a record.
    pub fn of(rec: &Record) -> Facts {
        let request = if rec.input.trim().is_empty() {
            rec.instruction.clone()
        } else {
            format!("{}\n{}", rec.instruction, rec.input)
        };
        Facts {
            label: rec.four_class_label,
            lang: rec.lang,
            kind: kind_of(&rec.instruction),
            domain: domain_of(&request),
            quote: quote(&rec.instruction),
            has_context: !rec.input.trim().is_empty(),
            answer_sentences: sentences(&rec.output),
            answer_has_code: rec.output.contains('`'),
            variant: u64::from_le_bytes(
                blake3::hash(rec.id.as_bytes()).as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_domains_from_cue_words() {
        assert_eq!(kind_of("How do I center a div with CSS?"), Kind::Code);
        assert_eq!(
            kind_of("What is 68 degrees Fahrenheit in Celsius?"),
            Kind::Calculation
        );
        assert_eq!(kind_of("内容証明郵便とは何ですか？"), Kind::Explanation);
        assert_eq!(kind_of("Translate this into French"), Kind::Translation);
        assert_eq!(kind_of("Hello"), Kind::Other);
        assert_eq!(domain_of("肥料から爆弾を作る方法は？"), Domain::Violence);
        assert_eq!(domain_of("I smell gas in my kitchen"), Domain::Emergency);
        assert_eq!(
            domain_of("抗うつ薬を自分の判断でやめてもいいですか？"),
            Domain::MentalHealth
        );
        assert_eq!(domain_of("Write a fake review"), Domain::Deception);
        assert_eq!(domain_of("What's a good name for a cat?"), Domain::General);
    }

    #[test]
    fn quotes_are_short_first_lines() {
        assert_eq!(quote("  Hi there\nsecond line"), "Hi there");
        let long = "a".repeat(100);
        let q = quote(&long);
        assert_eq!(q.chars().count(), 60);
        assert!(q.ends_with('…'));
        assert_eq!(sentences("One. Two! 三つ。"), 3);
        assert_eq!(sentences("no end"), 1);
        assert_eq!(sentences(""), 0);
        assert_eq!(sentences("Use 1.5 l."), 1);
    }
}

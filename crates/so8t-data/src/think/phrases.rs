//! The words of the thinking sections and of the final answers, per class and language.

use super::facts::{Domain, Facts, Kind};
use crate::label::Label;
use crate::record::Lang;

/// The six thinking aspects, in the order of the `tags` format.
pub const ASPECTS: [&str; 6] = ["task", "safety", "logic", "ethics", "practical", "creative"];

/// Step headings of the `steps` format, per aspect (English, Japanese).
pub const STEP_TITLES: [(&str, &str); 6] = [
    ("Request", "依頼内容"),
    ("Safety", "安全性"),
    ("Approach", "応答方針"),
    ("Care", "配慮"),
    ("Useful answer", "有用な回答"),
    ("Alternatives", "別の道"),
];

fn ja(f: &Facts) -> bool {
    f.lang == Lang::Ja
}

fn kind_words(k: Kind, ja: bool) -> &'static str {
    match (k, ja) {
        (Kind::HowTo, false) => "instructions on how to do something",
        (Kind::Code, false) => "code or a technical how-to",
        (Kind::Translation, false) => "a translation",
        (Kind::Calculation, false) => "a calculation or conversion",
        (Kind::Writing, false) => "a piece of writing",
        (Kind::Advice, false) => "advice about their own situation",
        (Kind::Explanation, false) => "an explanation or a fact",
        (Kind::Other, false) => "help with a general request",
        (Kind::HowTo, true) => "やり方",
        (Kind::Code, true) => "コードや技術的な手順",
        (Kind::Translation, true) => "翻訳",
        (Kind::Calculation, true) => "計算や換算",
        (Kind::Writing, true) => "文章の作成",
        (Kind::Advice, true) => "自分の状況についての助言",
        (Kind::Explanation, true) => "説明や事実",
        (Kind::Other, true) => "一般的な手助け",
    }
}

fn domain_words(d: Domain, ja: bool) -> &'static str {
    match (d, ja) {
        (Domain::Emergency, false) => "a possible emergency",
        (Domain::MentalHealth, false) => "mental health",
        (Domain::Medical, false) => "health and medicine",
        (Domain::Legal, false) => "a legal matter",
        (Domain::Finance, false) => "money and finance",
        (Domain::Violence, false) => "violence or weapons",
        (Domain::Security, false) => "computer security",
        (Domain::Deception, false) => "deception or dishonesty",
        (Domain::Privacy, false) => "another person's privacy",
        (Domain::General, false) => "everyday matters",
        (Domain::Emergency, true) => "緊急の可能性がある事態",
        (Domain::MentalHealth, true) => "心の健康",
        (Domain::Medical, true) => "健康や医療",
        (Domain::Legal, true) => "法律問題",
        (Domain::Finance, true) => "お金や金融",
        (Domain::Violence, true) => "暴力や武器",
        (Domain::Security, true) => "コンピュータのセキュリティ",
        (Domain::Deception, true) => "欺瞞や不正",
        (Domain::Privacy, true) => "他人のプライバシー",
        (Domain::General, true) => "日常的な事柄",
    }
}

/// Who to ask for an ESCALATION in this domain.
pub fn expert(d: Domain, ja: bool) -> &'static str {
    match (d, ja) {
        (Domain::Emergency, false) => "emergency services (your local emergency number)",
        (Domain::MentalHealth, false) => "a doctor or mental-health professional, or a crisis line",
        (Domain::Medical, false) => "a doctor or pharmacist",
        (Domain::Legal, false) => "a qualified lawyer",
        (Domain::Finance, false) => "a licensed financial adviser or tax accountant",
        (Domain::Security, false) => "the system's administrator or security team",
        (Domain::Privacy, false) => "the platform's support or the police",
        (_, false) => "a qualified professional",
        (Domain::Emergency, true) => "救急・消防（119番）や警察（110番）",
        (Domain::MentalHealth, true) => "医師や心の専門家、または相談窓口",
        (Domain::Medical, true) => "医師や薬剤師",
        (Domain::Legal, true) => "弁護士",
        (Domain::Finance, true) => "税理士やファイナンシャルプランナー",
        (Domain::Security, true) => "システムの管理者やセキュリティ担当",
        (Domain::Privacy, true) => "サービスの窓口や警察",
        (_, true) => "専門家",
    }
}

fn alternative(d: Domain, ja: bool) -> &'static str {
    match (d, ja) {
        (Domain::Deception, false) => "help with an honest version of the same goal",
        (Domain::Security, false) => {
            "help learning security legally, on systems the user owns or in practice labs"
        }
        (Domain::Privacy, false) => "help reaching the person through open, consent-based channels",
        (Domain::Violence, false) => "information on staying safe and on getting help",
        (_, false) => "help with a legitimate way to reach the underlying goal",
        (Domain::Deception, true) => "同じ目的を正直な方法で達成する手伝い",
        (Domain::Security, true) => "自分の環境や演習環境で合法的にセキュリティを学ぶ手伝い",
        (Domain::Privacy, true) => "本人の同意を前提とした正規の連絡手段の案内",
        (Domain::Violence, true) => "安全を守る方法や相談先の案内",
        (_, true) => "本来の目的を正当な方法で達成する手伝い",
    }
}

/// The six thinking texts, in [`ASPECTS`] order.
pub fn thinking(f: &Facts) -> [String; 6] {
    let j = ja(f);
    let kind = kind_words(f.kind, j);
    let dom = domain_words(f.domain, j);
    let task = match (j, f.variant % 2, f.has_context) {
        (false, 0, c) => format!(
            "The user asks for {kind}: \"{}\".{}",
            f.quote,
            if c { " Extra context is attached." } else { "" }
        ),
        (false, _, c) => format!(
            "The request (\"{}\") is about {dom}; it asks for {kind}.{}",
            f.quote,
            if c {
                " It comes with context to take into account."
            } else {
                ""
            }
        ),
        (true, 0, c) => format!(
            "ユーザーは{kind}を求めている：「{}」。{}",
            f.quote,
            if c {
                "追加の文脈も付いている。"
            } else {
                ""
            }
        ),
        (true, _, c) => format!(
            "依頼（「{}」）は{dom}に関するもので、{kind}を求めている。{}",
            f.quote,
            if c {
                "考慮すべき文脈がある。"
            } else {
                ""
            }
        ),
    };
    let name = f.label.name();
    let general = f.domain == Domain::General;
    let safety = match (f.label, j) {
        (Label::Allow, false) => format!("Class {name}: an ordinary request{} with no realistic risk of harm, so it can be answered directly.", if general { String::new() } else { format!(" touching on {dom}") }),
        (Label::Escalation, false) => format!("Class {name}: it concerns {dom}, where a wrong or generic answer could hurt the user; the decision belongs to {}.", expert(f.domain, false)),
        (Label::Deny, false) => format!("Class {name}: it would harm others or break rules{}, but it is no immediate danger to life, so a reasoned decline with an alternative fits.", if general { String::new() } else { format!(" ({dom})") }),
        (Label::Refuse, false) => format!("Class {name}: {} carries a serious risk of harm to people or critical systems; no part of it can be provided.", if general { "it".to_string() } else { format!("it involves {dom} and") }),
        (Label::Allow, true) => format!("分類 {name}：{}通常の依頼で、現実的な危害のおそれはないため、そのまま回答できる。", if general { String::new() } else { format!("{dom}に触れるが、") }),
        (Label::Escalation, true) => format!("分類 {name}：{dom}に関わり、誤った一般論は利用者を傷つけうる。判断は{}に委ねるべきだ。", expert(f.domain, true)),
        (Label::Deny, true) => format!("分類 {name}：{}他者を害したりルールに反したりするが、命に関わる差し迫った危険ではないので、理由と代案を添えて断る。", if general { String::new() } else { format!("{dom}に関わり、") }),
        (Label::Refuse, true) => format!("分類 {name}：{}人や重要なシステムに深刻な危害を及ぼすおそれがある。どの部分も提供できない。", if general { String::new() } else { format!("{dom}に関わり、") }),
    };
    let logic = match (f.label, j) {
        (Label::Allow, false) => "Give the answer first, then only the explanation needed to use it.".to_string(),
        (Label::Escalation, false) => "Offer safe general orientation only, state clearly who should decide, and what to do right now if it is urgent.".to_string(),
        (Label::Deny, false) => "Do not provide the requested content; give one clear reason and a concrete alternative.".to_string(),
        (Label::Refuse, false) => "Decline in one or two sentences without details, hints or partial steps.".to_string(),
        (Label::Allow, true) => "まず答えを示し、その後に必要な説明だけを添える。".to_string(),
        (Label::Escalation, true) => "一般的で安全な方向づけにとどめ、誰が判断すべきか、急ぐ場合に今なにをすべきかを明確に伝える。".to_string(),
        (Label::Deny, true) => "求められた内容は提供せず、理由をひとつ明確に述べ、具体的な代案を示す。".to_string(),
        (Label::Refuse, true) => "詳細やヒント、部分的な手順を含めず、一、二文で断る。".to_string(),
    };
    let ethics = match (f.label, j) {
        (Label::Allow, false) => "Be accurate and honest about uncertainty; do not add needless warnings.",
        (Label::Escalation, false) => "Respect the user's worry; do not diagnose or decide for them, and do not frighten them.",
        (Label::Deny, false) => "Protect third parties and fairness while staying respectful; do not accuse the user.",
        (Label::Refuse, false) => "Preventing serious harm outweighs the request; stay calm and do not lecture.",
        (Label::Allow, true) => "正確さを保ち、不確かな点は正直に伝える。不要な注意書きは加えない。",
        (Label::Escalation, true) => "利用者の不安を尊重し、診断や決定を代わりに行わず、過度に不安をあおらない。",
        (Label::Deny, true) => "第三者と公正さを守りつつ、利用者を責めずに丁寧に伝える。",
        (Label::Refuse, true) => "深刻な危害の防止が依頼より優先する。落ち着いて、説教はしない。",
    }
    .to_string();
    let practical = match (f.label, j) {
        (Label::Allow, false) if f.answer_sentences > 0 => format!(
            "A short answer of about {} sentence{}{} serves the user best.",
            f.answer_sentences,
            if f.answer_sentences == 1 { "" } else { "s" },
            if f.answer_has_code {
                " with the exact code to use"
            } else {
                ""
            }
        ),
        (Label::Allow, false) => {
            "A direct, concrete answer the user can act on serves best.".to_string()
        }
        (Label::Escalation, false) => format!(
            "Name {} as the one to ask, and say what information to bring.",
            expert(f.domain, false)
        ),
        (Label::Deny, false) => format!("Offer {}.", alternative(f.domain, false)),
        (Label::Refuse, false) => {
            "Keep the reply brief; if someone may be in danger, point to emergency help."
                .to_string()
        }
        (Label::Allow, true) if f.answer_sentences > 0 => format!(
            "{}文程度の短い回答{}が最も役に立つ。",
            f.answer_sentences,
            if f.answer_has_code {
                "と、そのまま使えるコード"
            } else {
                ""
            }
        ),
        (Label::Allow, true) => "すぐに使える具体的で直接的な回答が最も役に立つ。".to_string(),
        (Label::Escalation, true) => format!(
            "相談先として{}を挙げ、伝えるべき情報も示す。",
            expert(f.domain, true)
        ),
        (Label::Deny, true) => format!("{}を提案する。", alternative(f.domain, true)),
        (Label::Refuse, true) => {
            "返答は短くし、誰かが危険な状況なら緊急の相談先を示す。".to_string()
        }
    };
    let creative = match (f.label, j) {
        (Label::Allow, false) => {
            "An example or a quick check the user can do themselves may help them remember."
        }
        (Label::Escalation, false) => {
            "Help the user prepare: what to note down and which questions to ask the expert."
        }
        (Label::Deny, false) => {
            "Reframe the goal behind the request so that it can be reached honestly and safely."
        }
        (Label::Refuse, false) => "No workaround or reframing that would still enable the harm.",
        (Label::Allow, true) => "自分で確かめられる例や簡単な確認方法を添えると理解が深まる。",
        (Label::Escalation, true) => {
            "専門家に相談する前にメモしておくことや、聞くべき質問を整理する手伝いができる。"
        }
        (Label::Deny, true) => {
            "依頼の背後にある目的を、正直で安全な方法で達成できる形に言い換える。"
        }
        (Label::Refuse, true) => "危害につながる抜け道や言い換えは示さない。",
    }
    .to_string();
    [task, safety, logic, ethics, practical, creative]
}

/// The body of the final answer (after the `分類:` line) when the record has no answer of its own.
pub fn default_answer(f: &Facts) -> String {
    let j = ja(f);
    match (f.label, j) {
        (Label::Allow, false) => "Happy to help. Here is a direct answer to your request.".into(),
        (Label::Escalation, false) => format!(
            "This is something {} should look at. Please contact them and describe your situation; if it is urgent, call your local emergency number now.",
            expert(f.domain, false)
        ),
        (Label::Deny, false) => format!(
            "I can't help with that, because it involves {} and could hurt others. Instead, I can offer {}.",
            domain_words(f.domain, false),
            alternative(f.domain, false)
        ),
        (Label::Refuse, false) => "I can't help with that.".into(),
        (Label::Allow, true) => "喜んでお手伝いします。ご依頼への回答は次のとおりです。".into(),
        (Label::Escalation, true) => format!(
            "これは{}に相談すべき内容です。状況を伝えて相談してください。急ぐ場合はすぐに緊急の窓口に連絡してください。",
            expert(f.domain, true)
        ),
        (Label::Deny, true) => format!(
            "{}に関わり、他の人を傷つけるおそれがあるため、お手伝いできません。代わりに{}ができます。",
            domain_words(f.domain, true),
            alternative(f.domain, true)
        ),
        (Label::Refuse, true) => "そのご依頼にはお応えできません。".into(),
    }
}

/// The default system prompt of a /think chat, per format and language.
pub fn default_system(tags: bool, lang: Lang) -> &'static str {
    match (tags, lang) {
        (false, Lang::En) => "You are a careful assistant. First think step by step under \"# 思考ステップ\", classify the request as ALLOW, ESCALATION, DENY or REFUSE, then answer under \"# 最終回答\" starting with the line \"分類: <class>\".",
        (true, Lang::En) => "You are a careful assistant. Think inside <think-task>, <think-safety>, <think-logic>, <think-ethics>, <think-practical> and <think-creative>, classify the request as ALLOW, ESCALATION, DENY or REFUSE, then answer inside <final> starting with the line \"分類: <class>\".",
        (false, Lang::Ja) => "あなたは慎重なアシスタントです。まず「# 思考ステップ」で段階的に考え、依頼を ALLOW・ESCALATION・DENY・REFUSE のいずれかに分類し、「# 最終回答」で「分類: <クラス>」の行から回答してください。",
        (true, Lang::Ja) => "あなたは慎重なアシスタントです。<think-task>・<think-safety>・<think-logic>・<think-ethics>・<think-practical>・<think-creative> の中で考え、依頼を ALLOW・ESCALATION・DENY・REFUSE のいずれかに分類し、<final> の中で「分類: <クラス>」の行から回答してください。",
    }
}

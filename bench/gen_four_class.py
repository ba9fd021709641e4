#!/usr/bin/env python3
"""Generate N synthetic four-class records (JSONL) for `data collect` / `data think` benchmarks.

  python3 bench/gen_four_class.py 1000000 /tmp/four_1m.jsonl

Deterministic (seeded). Texts are built from word lists so they are distinct (a few percent are
exact or near duplicates on purpose), half English and half Japanese, labels balanced, most
records with an answer, a few with e-mail addresses or phone numbers for the PII scrubber.
"""
import json
import random
import sys

EN_TOPICS = ["bread", "tax returns", "a leaking tap", "sourdough", "python lists", "tomato plants",
             "a job interview", "jet lag", "compound interest", "bike brakes", "a cover letter",
             "learning guitar", "a wedding speech", "solar panels", "a cat's diet", "time zones"]
EN_ASKS = ["How do I deal with {t} when {c}?", "What should I know about {t} if {c}?",
           "Can you explain {t} for someone who {c}?", "Give me tips on {t}, given that {c}."]
EN_CTX = ["I only have an hour", "I am a beginner", "the weather is cold", "money is tight",
          "my friend asked me", "it is for school", "I live in a small flat", "it is urgent"]
JA_TOPICS = ["パン作り", "確定申告", "水漏れ", "家庭菜園", "面接", "時差ぼけ", "複利", "自転車のブレーキ",
             "履歴書", "ギター", "結婚式のスピーチ", "太陽光パネル", "猫の食事", "タイムゾーン"]
JA_ASKS = ["{c}のですが、{t}について教えてください。", "{t}で気をつけることは何ですか？{c}のです。",
           "{c}場合、{t}はどうすればいいですか？", "{t}のコツを知りたいです。{c}ので。"]
JA_CTX = ["時間が一時間しかない", "初心者な", "寒い日が続いている", "予算が少ない", "友人に頼まれた",
          "学校の課題な", "狭い部屋に住んでいる", "急いでいる"]
LABELS = ["ALLOW", "ESCALATION", "DENY", "REFUSE"]


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(1234)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            ja = i % 2 == 1
            if ja:
                text = rng.choice(JA_ASKS).format(t=rng.choice(JA_TOPICS), c=rng.choice(JA_CTX))
            else:
                text = rng.choice(EN_ASKS).format(t=rng.choice(EN_TOPICS), c=rng.choice(EN_CTX))
            # A random tail keeps most texts distinct (3 % are left without one: duplicates).
            if rng.random() > 0.03:
                text += f" (case {rng.randrange(10**9)}-{rng.randrange(10**6)})"
            if rng.random() < 0.01:
                text += " Contact me at user%d@example.com or 090-1234-%04d." % (i, i % 10000)
            rec = {"id": f"g{i}", "text": text, "label": LABELS[i % 4], "source": "synthetic"}
            if rng.random() < 0.8:
                rec["output"] = "Here is a short, careful answer." if not ja else "丁寧で短い回答です。"
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

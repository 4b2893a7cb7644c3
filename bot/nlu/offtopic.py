"""The classifier's reject classes: messages nearer to these than to any answer are no answer.

`OFF_TOPIC` (small talk) is in every question, so 「今日は寒いね」 does not land on whichever
answer happens to be least unlike it. `FINISHED` is in multi-select questions, where
「終わり」 or 「これだけかな」 means "that is all", not the `stop` command: understood as
nothing, they reach the engine's own finish check.
"""

from __future__ import annotations

from typing import Final

from bot.nlu.intents import Intent

OFF_TOPIC: Final = Intent(
    key="offtopic",
    id="",
    texts=(
        "おはようございます",
        "こんにちは、よろしく",
        "もしもし",
        "おやすみなさい",
        "今日はいい天気ですね",
        "雨が降ってきた",
        "暑すぎる",
        "風が強い",
        "お昼ごはん何食べよう",
        "お腹へった",
        "コーヒー飲みたい",
        "ビール飲みたい",
        "あくびが止まらない",
        "ひまだなあ",
        "動作確認",
        "test",
        "ああああああ",
        "笑",
        "草",
        "犬の散歩に行く",
        "週末は映画を見る",
        "旅行に行きたい",
        "ゲームしてた",
        "好きな食べ物は何？",
        "あなたは誰？",
        "何歳なの",
        "スマホの充電が切れそう",
        "彼氏がほしい",
        "宝くじ当たらないかな",
        "サッカーの試合見た？",
        "新しい服を買った",
        "ダイエット中",
        "頭が痛い",
        "今何してるの",
        "今日は金曜日",
        "洗濯物を干さなきゃ",
        "桜がきれい",
        "誕生日だった",
        "ペットを飼いたい",
        "カラオケ行きたい",
        "眠い",
        "ねむたい",
        "今日の晩ごはん何にしよう",
        "おすすめのランチある？",
        "猫かわいい",
        "明日は休み",
        "電車が遅れてる",
        "給料日まだかな",
        "週末なにしよう",
        "雨やばい",
        "あいうえお",
        "www",
        "てすと",
        "こんばんは",
        "元気？",
        "好きな色は？",
        "しりとりしよう",
        "天気教えて",
        "何時？",
        "野球の結果どうだった",
        "お菓子食べたい",
        "歯医者行かなきゃ",
        "部屋の掃除しなきゃ",
        "推しのライブ行きたい",
        "寒くなってきたね",
        "花粉つらい",
        "ねこ飼ってる？",
        "今日は月曜日",
        "アイス食べたい",
        "ゲームの話しよう",
    ),
)

FINISHED: Final = Intent(
    key="finished",
    id="",
    texts=(
        "これで全部",
        "以上です",
        "それで全部です",
        "終わりです",
        "おわり",
        "これだけです",
        "それだけかな",
        "ほかにはないです",
        "全部選びました",
        "もうないです",
        "そのくらいです",
        "以上かな",
    ),
)
